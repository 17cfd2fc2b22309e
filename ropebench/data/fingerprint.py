"""A corpus's fingerprint: what a run records of the tokens it trains on, so that continuing it on other text is
refused (``ropebench resume`` after the corpus's files changed would otherwise train on the new text, unrecorded).

It hashes the token streams and document spans of every split, not the files or the cache's name: a cache rebuilt
unchanged (another cache directory, a new cache version) gives the same fingerprint, any change of the text, its
split or its tokenizer another one.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from ropebench.data.corpus import Corpus, TokenSplit

_CHUNK = 1 << 24  # tokens hashed at a time: a large corpus is read from its memory map piece by piece


def corpus_fingerprint(corpus: Corpus) -> str:
    """16 hex digits of SHA-1 over each text split's tokens and spans (a generated corpus: its split names)."""
    digest = hashlib.sha1()
    for field in dataclasses.fields(corpus):
        split = getattr(corpus, field.name)
        digest.update(field.name.encode())
        if isinstance(split, TokenSplit):
            for start in range(0, split.n_tokens, _CHUNK):
                digest.update(np.ascontiguousarray(split.tokens[start : start + _CHUNK]).tobytes())
            digest.update(np.ascontiguousarray(split.starts, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(split.ends, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]
