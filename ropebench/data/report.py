"""How much of each validation document is already in a training document (``ropebench data-report``).

For each validation document: the largest fraction of its byte 32-grams -- every one of them, counted exactly --
found in any single training document. A validation document that mostly repeats a training one measures
memorisation, not modelling; the split (``ropebench.data``) keeps every document under 50%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropebench.data import Corpus, TokenSplit, dedup
from ropebench.errors import UserError

LIMIT = 0.5


@dataclass
class Overlap:
    fraction: float  # of the validation document's n-grams found in the training document
    val_name: str
    train_name: str
    ngrams: int  # distinct n-grams of the validation document


@dataclass
class OverlapReport:
    n_train: int
    n_val: int
    n_measured: int  # validation documents with at least one n-gram (NGRAM bytes or more)
    largest: list[Overlap]  # the largest overlaps, largest first
    above_limit: int  # validation documents with more than LIMIT of their n-grams in one training document

    def lines(self) -> list[str]:
        head = (f"{self.n_val} validation documents ({self.n_measured} of at least {dedup.NGRAM} bytes) against "
                f"{self.n_train} training documents; every {dedup.NGRAM}-byte n-gram counted")
        out = [head, f"validation documents with more than {LIMIT:.0%} of their n-grams in one training document: "
                     f"{self.above_limit}"]
        if self.largest:
            top = self.largest[0]
            out.append(f"largest overlap: {top.fraction:.1%} of validation '{top.val_name}' ({top.ngrams} n-grams) "
                       f"is in training '{top.train_name}'")
        out += [f"  {o.fraction:6.1%}  {o.val_name}  <-  {o.train_name}" for o in self.largest]
        return out


def split_overlap(train: list[bytes], train_names: list[str], val: list[bytes], val_names: list[str],
                  top: int = 5) -> OverlapReport:
    """The overlap report for documents given as bytes, with their names."""
    fraction, best, sizes = dedup.best_containment(val, train)
    order = np.lexsort((np.arange(len(val)), -fraction))[:top]  # largest first, ties in document order
    largest = [Overlap(float(fraction[k]), val_names[k], train_names[best[k]], int(sizes[k]))
               for k in order if best[k] >= 0]
    return OverlapReport(len(train), len(val), int((sizes > 0).sum()), largest, int((fraction > LIMIT).sum()))


def _documents(split: TokenSplit) -> list[bytes]:
    return [split.tokens[s:e].astype(np.uint8).tobytes() for s, e in zip(split.starts.tolist(), split.ends.tolist())]


def corpus_overlap(corpus: Corpus, top: int = 5) -> OverlapReport:
    if corpus.names is None:
        raise UserError("this corpus has no stored documents to compare (data=passkey is generated on the fly)")
    return split_overlap(_documents(corpus.train), corpus.names["train"], _documents(corpus.val),
                         corpus.names["val"], top)
