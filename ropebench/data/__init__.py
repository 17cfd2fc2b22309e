"""The data layer: corpora tokenized once into memory-mapped caches, the near-duplicate-aware split, the
synthetic passkey task, and the overlap report. Imports only the core layer."""

from ropebench.data.corpus import EOD, VOCAB_SIZE, Corpus, TokenSplit, load_corpus

__all__ = ["EOD", "VOCAB_SIZE", "Corpus", "TokenSplit", "load_corpus"]
