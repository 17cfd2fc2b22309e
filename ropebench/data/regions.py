"""Which tokens of the held-out documents evaluation scores: one region per document, the same at every length.

Each document long enough contributes one region of R + 1 tokens (R = the region length: 16 x the training
length by default), starting at a fixed pseudo-random offset drawn from the document's name -- so regions sample
every part of documents, not only their beginnings (licence headers, imports), and every run, length and machine
scores the same tokens. A token budget takes whole regions, of the first documents in the split's fixed order.
The perplexity probe (``ropebench.eval.perplexity``) scores these spans; ``data-report`` measures how much of
them is already in training.
"""

from __future__ import annotations

import hashlib
import math


def region_offset(name: str, spare: int) -> int:
    """Where a document's region starts: an offset in [0, spare] drawn from the document's name alone."""
    digest = hashlib.sha1(f"region:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (spare + 1)


def region_spans(split, names: list[str] | None, length: int, region: int, max_tokens: int = 0) -> list[tuple]:
    """Token spans [start, end) scored at ``length``: a region of max(length, region) + 1 tokens in each document
    that has that many (else, past the region length, in each that has length + 1), the first
    ceil(max_tokens / region) of them when ``max_tokens`` is set. ``split`` is a TokenSplit; ``names`` its
    documents' names (None: numbered)."""
    region = max(length, region)
    # The documents first: a split without text (passkey, task) refuses here, in its own words.
    docs = split.documents(min_len=region + 1) or split.documents(min_len=length + 1)
    names = names or [str(i) for i in range(len(split.starts))]
    named = dict(zip(split.starts.tolist(), names))
    if max_tokens:  # whole regions: the same documents at every length up to the region
        docs = docs[: math.ceil(max_tokens / region)]
    spans = []
    for start, end in docs:
        take = min(end - start, region + 1)
        offset = region_offset(named[start], end - start - take)
        spans.append((start + offset, start + offset + take))
    return spans
