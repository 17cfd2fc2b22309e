"""Tokenizers: UTF-8 bytes (the offline default) or any Hugging Face tokenizer (``data.tokenizer=DIR_OR_HUB_NAME``).

Bytes need nothing: ids 0-255 are a document's UTF-8 bytes and 256 ends a document. Perplexities in papers are
per subword token, so a tokenizer directory or Hub name is loaded with ``transformers.AutoTokenizer`` (the
``[hf]`` extra); its end-of-text token ends each document, its largest id decides the model's vocabulary, and a
hash of its content keys the token cache, so two tokenizers never share one.

Token caches are uint16 while every id fits (bytes, GPT-2's 50,257 ids) and uint32 beyond.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ropebench.data import hf_env
from ropebench.errors import UserError

BYTES = "bytes"
_BATCH = 256  # documents per call into the tokenizer: parallel inside one call, bounded memory across calls


class Tokenizer:
    """What the corpus and the model need from a tokenizer."""

    name: str  # the spec as given: "bytes", a directory or a Hub name
    vocab_size: int  # rows of the model's embedding: the largest id + 1
    eod_id: int  # the token that ends every document
    fingerprint: str  # stable hash of the tokenizer's content (keys the token cache)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, no special tokens added."""
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids of many documents at once (the fast path for whole corpora)."""
        return [np.asarray(self.encode(t), dtype=self.dtype) for t in texts]

    def decode_bytes(self, ids: np.ndarray) -> bytes:
        """The UTF-8 text of ``ids`` (data-report compares texts, whatever tokenized them)."""
        raise NotImplementedError

    @property
    def dtype(self) -> type:
        """The token cache's element type: the smallest unsigned integer that holds every id."""
        return np.uint16 if self.vocab_size <= 1 << 16 else np.uint32

    def save(self, directory) -> bool:
        """Write the tokenizer's files into ``directory`` (for an exported model); False when there are none."""
        return False


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes plus an end-of-document token: the stream every byte-level cache and result was made with."""

    name = BYTES
    vocab_size = 257
    eod_id = 256
    fingerprint = BYTES

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode_bytes(self, ids: np.ndarray) -> bytes:
        ids = np.asarray(ids)
        return ids[ids != self.eod_id].astype(np.uint8).tobytes()


class HFTokenizer(Tokenizer):
    """A ``transformers`` tokenizer; ``hf`` is the loaded ``PreTrainedTokenizerBase`` (for exporters)."""

    def __init__(self, name: str, hf):
        self.name, self.hf = name, hf
        if hf.eos_token_id is None:
            raise UserError(f"tokenizer '{name}' has no end-of-text token (eos_token), which ropebench puts between "
                            "documents; save it with an eos_token")
        self.eod_id = int(hf.eos_token_id)
        self.vocab_size = max(max(hf.get_vocab().values()), self.eod_id) + 1
        if self.vocab_size > 1 << 32:
            raise UserError(f"tokenizer '{name}' has {self.vocab_size} ids; at most 2**32 fit the token cache")
        self.fingerprint = _content_hash(hf, self.eod_id, self.vocab_size)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for i in range(0, len(texts), _BATCH):
            # verbose=False: a document longer than the tokenizer's model_max_length is fine here (it is cut into
            # windows later), so transformers' warning about it would only mislead.
            ids = self.hf(list(texts[i : i + _BATCH]), add_special_tokens=False, return_attention_mask=False,
                          return_token_type_ids=False, verbose=False)["input_ids"]
            out += [np.asarray(row, dtype=self.dtype) for row in ids]
        return out

    def decode_bytes(self, ids: np.ndarray) -> bytes:
        return self.hf.decode(np.asarray(ids).tolist(), skip_special_tokens=True).encode("utf-8")

    def save(self, directory) -> bool:
        self.hf.save_pretrained(str(directory))
        return True


def special_lead(hf) -> list[int]:
    """The special tokens a transformers tokenizer puts before a text (a BOS), which its model expects first."""
    plain = hf.encode("x", add_special_tokens=False)
    full = hf.encode("x")
    return full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []


def _content_hash(hf, eod_id: int, vocab_size: int) -> str:
    """A hash of what decides the ids: the fast tokenizer's full serialisation (vocabulary, merges, normaliser,
    pre-tokeniser, added tokens), else the vocabulary; the same tokenizer under another path hashes the same."""
    backend = getattr(hf, "backend_tokenizer", None)
    content = backend.to_str() if backend is not None else json.dumps(sorted(hf.get_vocab().items()))
    h = hashlib.sha1(f"{type(hf).__name__}:{eod_id}:{vocab_size}:".encode())
    h.update(content.encode())
    return h.hexdigest()[:16]


def load_tokenizer(spec: str, trust_remote_code: bool = False) -> Tokenizer:
    """``bytes``, or a tokenizer directory / Hub name loaded with ``AutoTokenizer`` (a Hub name needs network).
    ``trust_remote_code``: let a tokenizer whose code ships with the model run it (the model's own flag)."""
    spec = str(spec).strip()
    if spec == BYTES:
        return ByteTokenizer()
    if not spec:
        raise UserError("data.tokenizer is empty; use bytes, a tokenizer directory or a Hugging Face Hub name")
    local = Path(os.path.expanduser(spec))
    if local.exists() and not local.is_dir():
        raise UserError(f"tokenizer '{spec}' is a file; data.tokenizer takes a directory (a saved tokenizer's "
                        "tokenizer.json and tokenizer_config.json) or a Hugging Face Hub name")
    if not local.exists() and hf_env.looks_like_path(spec):
        raise UserError(f"tokenizer directory '{spec}' does not exist")
    return _load_hf(spec, _state(local), trust_remote_code)


def _state(directory: Path) -> tuple:
    """Names, sizes and times of a directory's files: a tokenizer rewritten in place is loaded again."""
    if not directory.is_dir():
        return ()
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir()) if p.is_file())


@functools.lru_cache(maxsize=8)
def _load_hf(spec: str, state: tuple, trust_remote_code: bool = False) -> HFTokenizer:
    local = bool(state) or Path(os.path.expanduser(spec)).is_dir()
    hf_env.prepare(network=not local)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError(f"data.tokenizer={spec} needs the [hf] extra: pip install -e '.[hf]'") from None
    target = os.path.expanduser(spec) if local else spec
    try:
        hf = AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code)
    except Exception as exc:  # a broken directory, an unknown name, no network: one line naming the spec
        where = "from its directory" if local else "(not a directory here; a Hub name needs network)"
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        # transformers' words for a tokenizer with its own code ("custom code"; before 4.48: "execute the
        # configuration file", with trust_remote_code on a later line)
        own_code = "custom code" in message or "trust_remote_code" in str(exc) or "execute the configuration" in message
        if own_code and not trust_remote_code:
            message = "it ships its own code, which runs only with --trust-remote-code (if you trust its source)"
        raise UserError(f"could not load tokenizer '{spec}' {where}: {type(exc).__name__}: {message}") from None
    return HFTokenizer(spec, hf)
