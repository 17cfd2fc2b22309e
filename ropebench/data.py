"""Corpora: collect documents, split them by document, tokenize once into memory-mapped caches, serve batches.

Tokens are bytes (0-255) plus one end-of-document token (256): nothing to download, any text works.
Documents go through Hugging Face ``datasets`` (offline mode is forced before it is imported, so a local
load never touches the network). The train/validation split is by document and depends only on each
document's name, so it is the same on every machine and for every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ropebench.errors import UserError, choose

EOD = 256
VOCAB_SIZE = 257
CACHE_VERSION = 1
TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".tex", ".json", ".csv", ".html", ".c", ".h")
SOURCES = ("stdlib", "text_files", "hub", "passkey")


@dataclass
class TokenSplit:
    """One split: a flat uint16 token stream (documents separated by EOD) and each document's span."""

    tokens: np.ndarray
    starts: np.ndarray  # first token of each document
    ends: np.ndarray  # one past its last token (the EOD after it is not part of the document)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def doc_lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def documents(self, min_len: int = 0):
        """Spans (start, end) of documents with at least ``min_len`` tokens, in a fixed pseudo-random order."""
        keep = self.doc_lengths() >= min_len
        return list(zip(self.starts[keep].tolist(), self.ends[keep].tolist()))

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator):
        """Random windows: inputs (B, T) and next-token targets (B, T), int64 on the CPU."""
        high = self.n_tokens - seq_len - 1
        if high <= 0:
            raise UserError(f"train.seq_len={seq_len} is longer than the training data ({self.n_tokens} tokens)")
        ix = torch.randint(high, (batch_size,), generator=generator).tolist()
        rows = np.stack([self.tokens[i : i + seq_len + 1] for i in ix]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]


@dataclass
class Corpus:
    train: TokenSplit
    val: TokenSplit
    vocab_size: int
    info: dict


def _doc_hash(name: str, salt: str) -> float:
    digest = hashlib.sha1(f"{salt}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stdlib_files() -> tuple[Path, list[Path]]:
    """Every .py file of the running interpreter's standard library (third-party site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return root, files


def user_files(paths) -> tuple[Path | None, list[Path]]:
    if not paths:
        raise UserError("data=text_files needs data.paths=[FILE_OR_DIR,...]; none were given")
    files = []
    for raw in paths:
        path = Path(os.path.expanduser(str(raw)))
        if not path.exists():
            raise UserError(f"data path '{raw}' does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise UserError(f"data path '{raw}' holds no text files ({', '.join(TEXT_SUFFIXES)})")
            files += found
        else:
            files.append(path)
    return None, files


def _import_datasets():
    # Offline before the first import: otherwise even a local load makes a network call with a timeout.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _load_local_documents(files: list[Path], cache: Path):
    """One text per file, through datasets' text builder (undecodable bytes replaced, never fatal)."""
    datasets = _import_datasets()
    ds = datasets.load_dataset(
        "text", data_files=[str(f) for f in files], sample_by="document", encoding_errors="replace",
        split="train", cache_dir=str(cache / "hf"),
    )
    texts = ds["text"]
    if len(texts) != len(files):  # the split by name below pairs texts with files by position
        raise RuntimeError(f"datasets returned {len(texts)} documents for {len(files)} files")
    return texts


def _load_hub_documents(cfg, cache: Path):
    if os.environ.get("HF_HUB_OFFLINE") == "1" and "datasets" not in sys.modules:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "0"  # the user asked for the Hub
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hub_path, cfg.hub_name or None, cache_dir=str(cache / "hf"))
    except Exception as exc:  # network or name problems: one clear line
        raise UserError(f"could not load '{cfg.hub_path}' from the Hugging Face Hub: {exc}") from None
    return {split: _articles(ds[split][cfg.text_column]) for split in ("train", "validation") if split in ds}


def _articles(lines: list[str]) -> list[str]:
    """WikiText stores one line per row; rebuild articles at top-level ' = Title = ' headings."""
    docs, current = [], []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
            if current:
                docs.append("".join(current))
            current = []
        current.append(line)
    if current:
        docs.append("".join(current))
    return [d for d in docs if d.strip()]


def _fingerprint(cfg, files: list[Path]) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{cfg.source}:{cfg.val_fraction}:{cfg.hub_path}:{cfg.hub_name}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _write_split(directory: Path, name: str, texts: list[str]) -> dict:
    encoded = [t.encode("utf-8") for t in texts]
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    tokens = np.memmap(directory / f"{name}.bin", dtype=np.uint16, mode="w+", shape=(int((lengths + 1).sum()),))
    for start, blob in zip(starts.tolist(), encoded):
        tokens[start : start + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        tokens[start + len(blob)] = EOD
    tokens.flush()
    np.save(directory / f"{name}_docs.npy", np.stack([starts, starts + lengths]))
    return {"documents": len(texts), "tokens": int(lengths.sum())}


def _read_split(directory: Path, name: str) -> TokenSplit:
    tokens = np.memmap(directory / f"{name}.bin", dtype=np.uint16, mode="r")
    starts, ends = np.load(directory / f"{name}_docs.npy")
    return TokenSplit(tokens, starts, ends)


def _split_documents(names: list[str], texts: list[str], val_fraction: float):
    """Deterministic split by document name; each split in a fixed pseudo-random order (not alphabetical)."""
    order = sorted(range(len(names)), key=lambda i: _doc_hash(names[i], "order"))
    train = [texts[i] for i in order if _doc_hash(names[i], "split") >= val_fraction]
    val = [texts[i] for i in order if _doc_hash(names[i], "split") < val_fraction]
    return train, val


def load_corpus(cfg, log=print) -> Corpus:
    """Build (once) and open the tokenized corpus described by a ``data`` config node."""
    choose("data source", cfg.source, SOURCES)
    if cfg.source == "passkey":  # synthetic, generated on the fly: nothing to read, split or cache
        from ropebench.passkey import load_passkey_corpus

        return load_passkey_corpus(cfg)
    if not 0 < cfg.val_fraction < 1 and cfg.source != "hub":
        raise UserError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    cache_root = Path(os.path.expanduser(str(cfg.cache_dir)))
    if cfg.source == "hub":
        files, root = [], None
        key = hashlib.sha1(f"v{CACHE_VERSION}:hub:{cfg.hub_path}:{cfg.hub_name}".encode()).hexdigest()[:16]
    else:
        root, files = stdlib_files() if cfg.source == "stdlib" else user_files(cfg.paths)
        if not files:
            raise UserError(f"data source '{cfg.source}' found no files")
        key = _fingerprint(cfg, files)
    directory = cache_root / f"{cfg.name}-{key}"
    if not (directory / "info.json").is_file():
        log(f"tokenizing {cfg.name} into {directory} (once) ...")
        tmp = cache_root / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if cfg.source == "hub":
            splits = _load_hub_documents(cfg, cache_root)
            train_texts, val_texts = splits["train"], splits.get("validation", [])
        else:
            texts = _load_local_documents(files, cache_root)
            names = [str(f.relative_to(root)) if root else str(f) for f in files]
            train_texts, val_texts = _split_documents(names, texts, cfg.val_fraction)
        if not any(t.strip() for t in train_texts):
            raise UserError(f"data '{cfg.name}' holds no text")
        if not val_texts:
            raise UserError(f"data '{cfg.name}' has no validation documents; add files or raise data.val_fraction")
        info = {"name": cfg.name, "source": cfg.source, "python": sys.version.split()[0],
                "train": _write_split(tmp, "train", train_texts), "val": _write_split(tmp, "val", val_texts)}
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        if (directory / "info.json").is_file():  # a parallel job built it meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
            try:
                os.replace(tmp, directory)  # atomic: a half-written cache is never seen
            except OSError:  # another job won the race
                shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads((directory / "info.json").read_text())
    return Corpus(_read_split(directory, "train"), _read_split(directory, "val"), VOCAB_SIZE, info)
