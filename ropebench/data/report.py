"""How much of the held-out text is already in training (``ropebench data-report``).

Two measures, every byte 32-gram counted exactly (texts compared as UTF-8, whatever tokenized them):

* per held-out document: the largest fraction of its n-grams found in any single training document. A held-out
  document that mostly repeats a training one measures memorisation, not modelling; the split
  (``ropebench.data``) keeps every document under 50%.
* per scored region (``ropebench.data.regions``, the tokens evaluation actually scores): the fraction of its
  n-grams that occur anywhere in training, and the largest fraction in one training document.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropebench.data import Corpus, TokenSplit, dedup
from ropebench.errors import UserError

LIMIT = 0.5
_NAMES = {"val": "validation", "test": "test"}


@dataclass
class Overlap:
    fraction: float  # of the held-out document's (or region's) n-grams found in the training document
    val_name: str
    train_name: str
    ngrams: int  # distinct n-grams of the held-out document


@dataclass
class OverlapReport:
    n_train: int
    n_val: int
    n_measured: int  # held-out documents with at least one n-gram (NGRAM bytes or more)
    largest: list[Overlap]  # the largest overlaps, largest first
    above_limit: int  # held-out documents with more than LIMIT of their n-grams in one training document
    held_out: str = "validation"

    def lines(self) -> list[str]:
        what = self.held_out
        head = (f"{self.n_val} {what} documents ({self.n_measured} of at least {dedup.NGRAM} bytes) against "
                f"{self.n_train} training documents; every {dedup.NGRAM}-byte n-gram counted")
        out = [head, f"{what} documents with more than {LIMIT:.0%} of their n-grams in one training document: "
                     f"{self.above_limit}"]
        if self.largest:
            top = self.largest[0]
            out.append(f"largest overlap: {top.fraction:.1%} of {what} '{top.val_name}' ({top.ngrams} n-grams) "
                       f"is in training '{top.train_name}'")
        out += [f"  {o.fraction:6.1%}  {o.val_name}  <-  {o.train_name}" for o in self.largest]
        return out


@dataclass
class RegionReport:
    """The scored regions against training: what evaluation's numbers rest on."""

    n_regions: int
    n_ngrams: int  # distinct n-grams summed over regions
    in_training: int  # of them, those that occur anywhere in the training documents
    largest: list[Overlap]  # regions with the largest share in one training document, largest first
    held_out: str
    length: int  # region length in tokens

    def lines(self) -> list[str]:
        share = self.in_training / max(self.n_ngrams, 1)
        out = [f"scored regions: {self.n_regions} {self.held_out} regions of {self.length} tokens; "
               f"{share:.1%} of their {self.n_ngrams} distinct {dedup.NGRAM}-byte n-grams occur somewhere in training"]
        if self.largest:
            top = self.largest[0]
            out.append(f"largest overlap of a region with one training document: {top.fraction:.1%} "
                       f"('{top.val_name}' in '{top.train_name}')")
        return out


def split_overlap(train: list[bytes], train_names: list[str], val: list[bytes], val_names: list[str],
                  top: int = 5, held_out: str = "validation") -> OverlapReport:
    """The overlap report for documents given as bytes, with their names."""
    fraction, best, sizes = dedup.best_containment(val, train)
    order = np.lexsort((np.arange(len(val)), -fraction))[:top]  # largest first, ties in document order
    largest = [Overlap(float(fraction[k]), val_names[k], train_names[best[k]], int(sizes[k]))
               for k in order if best[k] >= 0]
    return OverlapReport(len(train), len(val), int((sizes > 0).sum()), largest, int((fraction > LIMIT).sum()),
                         held_out)


def region_overlap(train: list[bytes], train_names: list[str], regions: list[bytes], region_names: list[str],
                   held_out: str, length: int, top: int = 3) -> RegionReport:
    hits, sizes = dedup.found_in(regions, train)
    fraction, best, _ = dedup.best_containment(regions, train)
    order = np.lexsort((np.arange(len(regions)), -fraction))[:top]
    largest = [Overlap(float(fraction[k]), region_names[k], train_names[best[k]], int(sizes[k]))
               for k in order if best[k] >= 0]
    return RegionReport(len(regions), int(sizes.sum()), int(hits.sum()), largest, held_out, length)


def _texts(split: TokenSplit, tokenizer, spans=None) -> list[bytes]:
    spans = spans if spans is not None else list(zip(split.starts.tolist(), split.ends.tolist()))
    return [tokenizer.decode_bytes(split.tokens[s:e]) for s, e in spans]


def corpus_overlap(corpus: Corpus, tokenizer, held_out: str = "test", top: int = 5, spans=None,
                   region_len: int = 0) -> tuple[OverlapReport, RegionReport | None]:
    """Both measures for one held-out split; ``spans`` are the scored regions (token spans of that split)."""
    if corpus.names is None:
        raise UserError("this corpus has no stored documents to compare (data=passkey is generated on the fly)")
    split = corpus.held_out(held_out)
    train = _texts(corpus.train, tokenizer)
    docs = split_overlap(train, corpus.names["train"], _texts(split, tokenizer), corpus.names[held_out], top,
                         _NAMES[held_out])
    if not spans:
        return docs, None
    owner = np.searchsorted(split.starts, [a for a, _ in spans], side="right") - 1  # the document holding each
    names = [corpus.names[held_out][k] for k in owner]
    return docs, region_overlap(train, corpus.names["train"], _texts(split, tokenizer, spans), names,
                                _NAMES[held_out], region_len)
