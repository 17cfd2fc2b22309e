"""The data layer: corpora tokenized once into memory-mapped caches, the near-duplicate-aware split, the
tokenizers (bytes or Hugging Face), the synthetic passkey task, and the overlap report. Imports only the core
layer."""

from ropebench.data.corpus import EOD, VOCAB_SIZE, Corpus, TokenSplit, load_corpus, vocab_size_for
from ropebench.data.tokenizer import Tokenizer, load_tokenizer

__all__ = ["EOD", "VOCAB_SIZE", "Corpus", "TokenSplit", "Tokenizer", "load_corpus", "load_tokenizer",
           "vocab_size_for"]
