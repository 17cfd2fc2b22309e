"""Corpora: collect documents, split them by document, tokenize once into memory-mapped caches, serve batches.

Tokens are bytes (0-255) plus one end-of-document token (256): nothing to download, any text works.
Documents go through Hugging Face ``datasets`` (offline mode is forced before it is imported, so a local
load never touches the network). The train/validation split is by document: near-duplicate documents are
grouped first (``ropebench.data.dedup``) and each group goes to one side, drawn from a hash of its smallest member's
name -- a name relative to the directory it was found in, so the split is the same on every machine, for every
run and however the path is spelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ropebench.data import dedup
from ropebench.errors import UserError, choose

EOD = 256
VOCAB_SIZE = 257
CACHE_VERSION = 2  # 2: near-duplicate groups split together, names relative to their root, names.json
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
    names: dict[str, list[str]] | None = None  # each split's document names, in the order of its documents


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


def _stdlib_named() -> tuple[list[str], list[Path]]:
    root, files = stdlib_files()
    return [f.relative_to(root).as_posix() for f in files], files


def user_files(paths) -> tuple[list[str], list[Path]]:
    """The text files under ``paths`` and their names: relative to the directory given (a file given by itself:
    its own name), so that `notes` and `/home/me/notes` name -- and split -- the same documents the same way."""
    if not paths:
        raise UserError("data=text_files needs data.paths=[FILE_OR_DIR,...]; none were given")
    names, files = [], []
    for raw in paths:
        path = Path(os.path.expanduser(str(raw)))
        if not path.exists():
            raise UserError(f"data path '{raw}' does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise UserError(f"data path '{raw}' holds no text files ({', '.join(TEXT_SUFFIXES)})")
            names += [p.relative_to(path).as_posix() for p in found]
            files += found
        else:
            names.append(path.name)
            files.append(path)
    return names, files


# What the user set before ropebench touched these variables: their explicit offline mode is never overridden.
_USER_OFFLINE = os.environ.get("HF_HUB_OFFLINE", os.environ.get("HF_DATASETS_OFFLINE"))


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
    if _USER_OFFLINE is None and "datasets" not in sys.modules:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "0"  # the config asks for the Hub
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


def _fingerprint(cfg, names: list[str], files: list[Path]) -> str:
    """Key of a cache: the names (they decide the split) and each file's resolved path, size and mtime."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{cfg.source}:{cfg.val_fraction}:{cfg.hub_path}:{cfg.hub_name}".encode())
    for name, f in zip(names, files):
        st = f.stat()
        h.update(f"{name}:{f.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _write_split(directory: Path, name: str, encoded: list[bytes]) -> dict:
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    tokens = np.memmap(directory / f"{name}.bin", dtype=np.uint16, mode="w+", shape=(int((lengths + 1).sum()),))
    for start, blob in zip(starts.tolist(), encoded):
        tokens[start : start + len(blob)] = np.frombuffer(blob, dtype=np.uint8)
        tokens[start + len(blob)] = EOD
    tokens.flush()
    np.save(directory / f"{name}_docs.npy", np.stack([starts, starts + lengths]))
    return {"documents": len(encoded), "tokens": int(lengths.sum())}


def _read_split(directory: Path, name: str) -> TokenSplit:
    tokens = np.memmap(directory / f"{name}.bin", dtype=np.uint16, mode="r")
    starts, ends = np.load(directory / f"{name}_docs.npy")
    return TokenSplit(tokens, starts, ends)


def _read_names(directory: Path, corpus: Corpus) -> dict[str, list[str]]:
    path = directory / "names.json"
    if path.is_file():
        return json.loads(path.read_text())
    # A hub cache built before names were stored: its documents are numbered, as a new one names them.
    return {split: [f"{split}:{i}" for i in range(len(part.starts))]
            for split, part in (("train", corpus.train), ("val", corpus.val))}


def _split_documents(names: list[str], blobs: list[bytes], val_fraction: float):
    """Indices of the training and the validation documents, each in a fixed pseudo-random order (not
    alphabetical), and what the near-duplicate search found.

    Near-duplicates (``ropebench.data.dedup``) form groups; a group goes to one side, drawn from a hash of its
    smallest member's name. A validation document still mostly contained in a training one (a licence header
    file, a module that a larger one includes) then moves to training. Depends only on names and contents."""
    start = time.perf_counter()
    src, dst = dedup.containment_links(blobs)
    group = dedup.near_duplicate_groups(len(names), src, dst).tolist()
    key: dict[int, str] = {}
    for i, g in enumerate(group):
        key[g] = min(key.get(g, names[i]), names[i])
    drawn = np.array([_doc_hash(key[g], "split") < val_fraction for g in group], dtype=bool)
    is_val = dedup.keep_contained_in_training(drawn, src, dst)
    sizes = np.bincount(group, minlength=len(names))
    found = {"groups": int((sizes > 1).sum()), "grouped_documents": int(sizes[sizes > 1].sum()),
             "moved_to_train": int((drawn & ~is_val).sum()), "seconds": round(time.perf_counter() - start, 2)}
    order = sorted(range(len(names)), key=lambda i: _doc_hash(names[i], "order"))
    return [i for i in order if not is_val[i]], [i for i in order if is_val[i]], found


def _documents(cfg, names: list[str], files: list[Path], cache_root: Path, log):
    """Each split's documents (UTF-8 bytes) and names, and what the build adds to info.json."""
    if cfg.source == "hub":
        splits = _load_hub_documents(cfg, cache_root)
        texts = {"train": splits["train"], "val": splits.get("validation", [])}
        named = {split: [f"{split}:{i}" for i in range(len(part))] for split, part in texts.items()}
        return {split: [t.encode("utf-8") for t in part] for split, part in texts.items()}, named, {}
    blobs = [t.encode("utf-8") for t in _load_local_documents(files, cache_root)]
    train, val, found = _split_documents(names, blobs, cfg.val_fraction)
    log(f"near-duplicates: {found['grouped_documents']} documents in {found['groups']} groups, each kept on one "
        f"side; {found['moved_to_train']} contained in training documents moved there ({found['seconds']} s)")
    docs = {"train": [blobs[i] for i in train], "val": [blobs[i] for i in val]}
    return docs, {"train": [names[i] for i in train], "val": [names[i] for i in val]}, {"near_duplicates": found}


def _build(cfg, directory: Path, key: str, names: list[str], files: list[Path], log) -> None:
    """Tokenize into a private directory, then move it into place atomically (parallel jobs may race)."""
    cache_root = directory.parent
    log(f"tokenizing {cfg.name} into {directory} (once) ...")
    tmp = cache_root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    docs, split_names, extra = _documents(cfg, names, files, cache_root, log)
    if not any(d.strip() for d in docs["train"]):
        raise UserError(f"data '{cfg.name}' holds no text")
    if not docs["val"]:
        raise UserError(f"data '{cfg.name}' has no validation documents; add files or raise data.val_fraction")
    info = {"name": cfg.name, "source": cfg.source, "python": sys.version.split()[0],
            "train": _write_split(tmp, "train", docs["train"]), "val": _write_split(tmp, "val", docs["val"]), **extra}
    (tmp / "names.json").write_text(json.dumps(split_names))
    (tmp / "info.json").write_text(json.dumps(info, indent=2))  # last: its presence marks a complete cache
    if (directory / "info.json").is_file():  # a parallel job built it meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.replace(tmp, directory)  # atomic: a half-written cache is never seen
    except OSError:  # another job won the race
        shutil.rmtree(tmp, ignore_errors=True)


def load_corpus(cfg, log=print) -> Corpus:
    """Build (once) and open the tokenized corpus described by a ``data`` config node."""
    choose("data source", cfg.source, SOURCES)
    if cfg.source == "passkey":  # synthetic, generated on the fly: nothing to read, split or cache
        from ropebench.data.passkey import load_passkey_corpus

        return load_passkey_corpus(cfg)
    if not 0 < cfg.val_fraction < 1 and cfg.source != "hub":
        raise UserError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    cache_root = Path(os.path.expanduser(str(cfg.cache_dir)))
    if cfg.source == "hub":
        names, files = [], []
        # The Hub's own split is used unchanged since v1, so its (large) caches stay valid: v1 in the key.
        key = hashlib.sha1(f"v1:hub:{cfg.hub_path}:{cfg.hub_name}".encode()).hexdigest()[:16]
    else:
        names, files = _stdlib_named() if cfg.source == "stdlib" else user_files(cfg.paths)
        if not files:
            raise UserError(f"data source '{cfg.source}' found no files")
        key = _fingerprint(cfg, names, files)
    directory = cache_root / f"{cfg.name}-{key}"
    if not (directory / "info.json").is_file():
        _build(cfg, directory, key, names, files, log)
    corpus = Corpus(_read_split(directory, "train"), _read_split(directory, "val"))
    corpus.names = _read_names(directory, corpus)
    return corpus
