"""Corpora: collect documents, split them by document, tokenize once into memory-mapped caches, serve batches.

Tokens are bytes (0-255) plus one end-of-document token (256) by default: nothing to download, any text works;
``data.tokenizer`` names a Hugging Face tokenizer instead (``ropebench.data.tokenizer``), whose end-of-text token
ends each document. Documents come from the standard library, the user's files, or any ``datasets`` source
(``data=hf``, ``ropebench.data.hf_source``), always through Hugging Face ``datasets`` (offline unless the config
names something on the Hub, so a local load never touches the network). The train/validation split is by
document, drawn on the text (the same for every tokenizer): near-duplicate documents are grouped first
(``ropebench.data.dedup``) and each group goes to one side, drawn from a hash of its smallest member's name -- a
name relative to the directory it was found in, so the split is the same on every machine, for every run and
however the path is spelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ropebench.data import dedup, hf_env, hf_source
from ropebench.data.digest import files_key
from ropebench.data.local_files import RECORD_SUFFIXES, local_documents, stdlib_named, user_files
from ropebench.data.tokenizer import BYTES, ByteTokenizer, Tokenizer, load_tokenizer
from ropebench.errors import UserError, choose

# The byte tokenizer's (data.tokenizer=bytes); a run's own vocabulary is vocab_size_for(cfg.data).
EOD = ByteTokenizer.eod_id
VOCAB_SIZE = ByteTokenizer.vocab_size
CACHE_VERSION = 2  # 2: near-duplicate groups split together, names relative to their root, names.json
SOURCES = ("stdlib", "text_files", "hf", "hub", "passkey", "task")  # hub: configs written before hf (WikiText)
HELD_OUT = ("val", "test")
# A held-out document mostly contained in a document of a side earlier here moves to that side: what is tested
# is never mostly something trained on, or tuned on.
SIDES = ("train", "val", "test")


@dataclass
class TokenSplit:
    """One split: a flat token stream (uint16, or uint32 for large vocabularies; documents separated by the
    tokenizer's end-of-document token) and each document's span."""

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
    test: TokenSplit | None = None  # None: a corpus drawn before the test split existed (data.test_fraction 0)

    def held_out(self, split: str) -> TokenSplit:
        """The documents evaluation scores: ``val`` (choosing settings) or ``test`` (reported results)."""
        choose("evaluation split", split, HELD_OUT)
        if split == "test" and self.test is None:
            raise UserError("this run's data has no test split (it was recorded before ropebench drew one, so its "
                            "training data holds today's test documents); evaluate it with --split val")
        return self.val if split == "val" else self.test


def _doc_hash(name: str, salt: str) -> float:
    digest = hashlib.sha1(f"{salt}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _fingerprint(cfg, names: list[str], files: list[Path], tokenizer: Tokenizer) -> str:
    """Key of a cache: what the documents are -- each file's name (names decide the split) and content
    (``digest.files_key``; never where the files are, how their paths were spelled or when they were touched) --
    and what tokenizes them; record files add the field their documents are read from."""
    records = f":text_field={cfg.get('text_field', 'text')}" if any(f.suffix.lower() in RECORD_SUFFIXES
                                                                      for f in files) else ""
    head = f"v{CACHE_VERSION}:{cfg.source}:{cfg.val_fraction}::{_tokens_key(cfg, tokenizer)}{records}"
    contents = files_key(zip(names, files), _cache_root(cfg))
    return hashlib.sha1(f"{head}\n{contents}".encode()).hexdigest()[:16]


def _cache_root(cfg) -> Path:
    return Path(os.path.expanduser(str(cfg.cache_dir)))


def _tokens_key(cfg, tokenizer: Tokenizer) -> str:
    """The part of a cache key that the test split, the tokenizer and the length filter add ("" for a corpus
    of a run recorded before the test split, with bytes and no filter: the caches built then stay valid)."""
    key = f":test={test_fraction(cfg)}:{cfg.get('test_split', '') or ''}" if test_fraction(cfg) else ""
    key += "" if tokenizer.name == BYTES else f":tokenizer={tokenizer.fingerprint}"
    return key + (f":min_doc_tokens={_min_doc_tokens(cfg)}" if _min_doc_tokens(cfg) else "")


def _min_doc_tokens(cfg) -> int:
    return int(cfg.get("min_doc_tokens", 0) or 0)


def _hf_key(cfg, tokenizer: Tokenizer) -> str:
    opts = hf_source.options(cfg)
    if str(cfg.source) == "hub" and tokenizer.name == BYTES and not _min_doc_tokens(cfg):
        # A run config from before data=hf: the Hub's own split, unchanged since v1, so its (large) caches stay
        # valid.
        return hashlib.sha1(f"v1:hub:{opts.path}:{opts.subset}".encode()).hexdigest()[:16]
    fraction = "" if opts.val_split else cfg.val_fraction
    text = f"v{CACHE_VERSION}:hf:{hf_source.source_key(opts, _cache_root(cfg))}:{fraction}{_tokens_key(cfg, tokenizer)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _write_split(directory: Path, name: str, encoded: list[np.ndarray], tokenizer: Tokenizer) -> dict:
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])[: len(encoded)].astype(np.int64)
    total = int((lengths + 1).sum())
    if not total:  # an evaluation-only corpus trains on nothing (a memory map cannot be empty)
        (directory / f"{name}.bin").write_bytes(b"")
        np.save(directory / f"{name}_docs.npy", np.zeros((2, 0), dtype=np.int64))
        return {"documents": 0, "tokens": 0}
    tokens = np.memmap(directory / f"{name}.bin", dtype=tokenizer.dtype, mode="w+", shape=(total,))
    for start, ids in zip(starts.tolist(), encoded):
        tokens[start : start + len(ids)] = ids
        tokens[start + len(ids)] = tokenizer.eod_id
    tokens.flush()
    np.save(directory / f"{name}_docs.npy", np.stack([starts, starts + lengths]))
    return {"documents": len(encoded), "tokens": int(lengths.sum())}


def _read_split(directory: Path, name: str, dtype: str = "uint16") -> TokenSplit:
    path = directory / f"{name}.bin"
    empty = path.stat().st_size == 0
    tokens = np.zeros(0, np.dtype(dtype)) if empty else np.memmap(path, dtype=np.dtype(dtype), mode="r")
    starts, ends = np.load(directory / f"{name}_docs.npy")
    return TokenSplit(tokens, starts, ends)


def _read_names(directory: Path, corpus: Corpus) -> dict[str, list[str]]:
    path = directory / "names.json"
    if path.is_file():
        return json.loads(path.read_text())
    # A hub cache built before names were stored: its documents are numbered, as a new one names them.
    return {split: [f"{split}:{i}" for i in range(len(part.starts))]
            for split, part in (("train", corpus.train), ("val", corpus.val))}


def test_fraction(cfg) -> float:
    """data.test_fraction; 0 for a run recorded before the test split existed (its config has no such key)."""
    return float(cfg.get("test_fraction", 0.0) or 0.0)


def _draw_side(u: float, fractions: dict[str, float]) -> int:
    """The side (index into SIDES) a group with hash ``u`` in [0, 1) goes to: validation first, then test, so
    the validation documents are the same whatever the test fraction (and as before the test split existed)."""
    low = 0.0
    for side in ("val", "test"):
        if low <= u < low + fractions.get(side, 0.0):
            return SIDES.index(side)
        low += fractions.get(side, 0.0)
    return 0


def _split_documents(names: list[str], blobs: list[bytes], fractions: dict[str, float]):
    """Indices of each side's documents (``SIDES``), each in a fixed pseudo-random order (not alphabetical), and
    what the near-duplicate search found; ``fractions`` gives the held-out sides' shares.

    Near-duplicates (``ropebench.data.dedup``) form groups; a group goes to one side, drawn from a hash of its
    smallest member's name. A held-out document still mostly contained in a training one (a licence header
    file, a module that a larger one includes) then moves to training, and a test document mostly contained in
    a validation one to validation. Depends only on names and contents."""
    start = time.perf_counter()
    src, dst = dedup.containment_links(blobs)
    group = dedup.near_duplicate_groups(len(names), src, dst).tolist()
    key: dict[int, str] = {}
    for i, g in enumerate(group):
        key[g] = min(key.get(g, names[i]), names[i])
    drawn = np.array([_draw_side(_doc_hash(key[g], "split"), fractions) for g in group], dtype=np.int64)
    side = dedup.follow_containers(drawn, src, dst)
    sizes = np.bincount(group, minlength=len(names))
    found = {"groups": int((sizes > 1).sum()), "grouped_documents": int(sizes[sizes > 1].sum()),
             "moved_to_train": int(((drawn > 0) & (side == 0)).sum()),
             "moved_to_val": int(((drawn == 2) & (side == 1)).sum()), "seconds": round(time.perf_counter() - start, 2)}
    order = sorted(range(len(names)), key=lambda i: _doc_hash(names[i], "order"))
    return {name: [i for i in order if side[i] == k] for k, name in enumerate(SIDES)}, found


def _documents(cfg, names: list[str], files: list[Path], cache_root: Path, log):
    """Each split's documents (UTF-8 bytes) and names, and what the build adds to info.json."""
    fractions = {"val": float(cfg.val_fraction), "test": test_fraction(cfg)}
    if str(cfg.source) in ("hf", "hub"):
        loaded = hf_source.load_documents(hf_source.options(cfg), cache_root)
        own = {side: part for side, part in loaded.items() if side != "train"}  # the data set's own splits, whole
        fractions = {side: f for side, f in fractions.items() if side not in own}
        names, texts = loaded["train"]
        blobs = [t.encode("utf-8") for t in texts]
    else:
        own = {}
        names, texts = local_documents(cfg, names, files, cache_root)
        blobs = [t.encode("utf-8") for t in texts]
    if cfg.val_fraction >= 1:  # text given to be scored (`eval-length MODEL --data`): every document, none trained on
        order = sorted(range(len(names)), key=lambda i: _doc_hash(names[i], "order"))
        held_out = ("val", "test") if test_fraction(cfg) else ("val",)  # both held-out splits are all of it
        return ({"train": [], **{s: [blobs[i] for i in order] for s in held_out}},
                {"train": [], **{s: [names[i] for i in order] for s in held_out}}, {})
    drawn, found = _split_documents(names, blobs, fractions)
    moved = f"; {found['moved_to_train']} contained in training documents moved there"
    if found["moved_to_val"]:
        moved += f", {found['moved_to_val']} test documents contained in validation ones moved there"
    log(f"near-duplicates: {found['grouped_documents']} documents in {found['groups']} groups, each kept on one "
        f"side{moved} ({found['seconds']} s)")
    docs = {side: [blobs[i] for i in idx] for side, idx in drawn.items()}
    split_names = {side: [names[i] for i in idx] for side, idx in drawn.items()}
    for side, (own_names, own_texts) in own.items():
        docs[side], split_names[side] = [t.encode("utf-8") for t in own_texts], own_names
    if not test_fraction(cfg) and "test" not in own:  # a corpus of a run from before the test split
        docs.pop("test"), split_names.pop("test")
    return docs, split_names, {"near_duplicates": found}


def _tokenized(cfg, docs: dict[str, list[bytes]], names: dict[str, list[str]], tokenizer: Tokenizer):
    """Each split's token ids and names, documents shorter than ``data.min_doc_tokens`` dropped. The split was
    drawn on the text, so every tokenizer sees the same training and validation documents."""
    ids = {side: tokenizer.encode_batch([b.decode("utf-8") for b in part]) for side, part in docs.items()}
    shortest = _min_doc_tokens(cfg)
    if shortest:
        keep = {side: [i for i, doc in enumerate(part) if len(doc) >= shortest] for side, part in ids.items()}
        ids = {side: [ids[side][i] for i in keep[side]] for side in ids}
        names = {side: [names[side][i] for i in keep[side]] for side in names}
    return ids, names


def _build(cfg, directory: Path, key: str, names: list[str], files: list[Path], tokenizer: Tokenizer, log) -> None:
    """Tokenize into a private directory, then move it into place atomically (parallel jobs may race)."""
    cache_root = directory.parent
    log(f"tokenizing {cfg.name} into {directory} (once) ...")
    docs, split_names, extra = _documents(cfg, names, files, cache_root, log)
    if not any(d.strip() for part in docs.values() for d in part):
        raise UserError(f"data '{cfg.name}' holds no text")
    ids, split_names = _tokenized(cfg, docs, split_names, tokenizer)
    shortest = f" of at least data.min_doc_tokens={_min_doc_tokens(cfg)} tokens" if _min_doc_tokens(cfg) else ""
    if not ids["train"] and cfg.val_fraction < 1:
        drawn = f"; its {len(ids['val'])} were all drawn for validation" if ids["val"] else ""
        raise UserError(f"data '{cfg.name}' has no training documents{shortest}{drawn}; give more documents")
    if not ids["val"]:
        own = str(cfg.source) in ("hf", "hub") and hf_source.options(cfg).val_split
        hint = f"data.val_split '{own}' holds none" if own else (
            f"its {len(ids['train'])} went to training (data.val_fraction={cfg.val_fraction} draws about that share); "
            "add documents or raise data.val_fraction")
        raise UserError(f"data '{cfg.name}' has no validation documents{shortest}; {hint}")
    if "test" in ids and not ids["test"]:
        own = str(cfg.source) in ("hf", "hub") and hf_source.options(cfg).test_split
        hint = f"data.test_split '{own}' holds none" if own else "add documents or raise data.test_fraction"
        raise UserError(f"data '{cfg.name}' has no test documents{shortest}; {hint}")
    tmp = cache_root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = {"name": cfg.name, "source": str(cfg.source), "python": sys.version.split()[0],
            "tokenizer": tokenizer.name, "tokenizer_fingerprint": tokenizer.fingerprint,
            "dtype": np.dtype(tokenizer.dtype).name,
            **{side: _write_split(tmp, side, part, tokenizer) for side, part in ids.items()}, **extra}
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


def _tokenizer_for(cfg) -> Tokenizer:
    """The data config's tokenizer, with the network allowed first if the config names anything on the Hub."""
    hf_env.prepare(network=hf_source.needs_network(cfg))
    return load_tokenizer(str(cfg.get("tokenizer", BYTES) or BYTES), bool(cfg.get("trust_remote_code", False)))


def vocab_size_for(data_cfg) -> int:
    """Rows of a model's embedding for this data: 257 for bytes (and for run configs that predate tokenizers),
    the task vocabulary's size for data=task, else the tokenizer's largest id + 1."""
    bytes_level = data_cfg is None or str(data_cfg.get("tokenizer", BYTES) or BYTES) == BYTES
    source = "" if data_cfg is None else str(data_cfg.get("source", ""))
    if source in ("passkey", "task") and not bytes_level:
        own = "is byte-level" if source == "passkey" else "has its own vocabulary"
        raise UserError(f"data={source} {own}; it takes no data.tokenizer (use data.tokenizer=bytes)")
    if source == "task":
        from ropebench.data.tasks import VOCAB_SIZE as TASK_VOCAB_SIZE

        return TASK_VOCAB_SIZE
    return VOCAB_SIZE if bytes_level else _tokenizer_for(data_cfg).vocab_size


def check_data_name(name: str) -> str:
    """``data.name`` names the token cache's directory: one that would reach outside the cache (``../..``) is
    refused."""
    if not name or any(sep in name for sep in ("/", "\\", os.sep)) or name in (".", ".."):
        raise UserError(f"data.name='{name}' names the token cache's directory: it must be a plain name, without a "
                        "path separator")
    return name


def cache_directory(cache_root: Path, name: str, key: str) -> Path:
    return cache_root / f"{check_data_name(name)}-{key}"


def load_corpus(cfg, log=print) -> Corpus:
    """Build (once) and open the tokenized corpus described by a ``data`` config node."""
    choose("data source", str(cfg.source), SOURCES)
    if cfg.source == "passkey":  # synthetic, generated on the fly: nothing to read, split or cache
        from ropebench.data.passkey import PasskeySplit

        vocab_size_for(cfg)  # refuses a tokenizer
        return Corpus(PasskeySplit("train"), PasskeySplit("val"), test=PasskeySplit("test"))
    if cfg.source == "task":  # generated on the fly too (ropebench.data.tasks)
        from ropebench.data.task_corpus import task_splits

        vocab_size_for(cfg)
        train, held_out = task_splits(cfg)
        return Corpus(train, held_out, test=held_out)
    hub_split = cfg.source == "hub" or (cfg.source == "hf" and hf_source.options(cfg).val_split)
    if not hub_split and not 0 < cfg.val_fraction <= 1:  # 1: every document is scored (evaluation text)
        raise UserError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    cache_root = _cache_root(cfg)
    tokenizer = _tokenizer_for(cfg)
    if cfg.source in ("hf", "hub"):
        if not hf_source.options(cfg).path:
            raise UserError("data=hf needs data.path=HUB_NAME_OR_LOCAL_PATH (a Hub data set, a directory, or "
                            "parquet/json/arrow/csv/txt files)")
        names, files, key = [], [], _hf_key(cfg, tokenizer)
    else:
        names, files = stdlib_named() if cfg.source == "stdlib" else user_files(cfg.paths)
        if not files:
            raise UserError(f"data source '{cfg.source}' found no files")
        key = _fingerprint(cfg, names, files, tokenizer)
    directory = cache_directory(cache_root, str(cfg.name), key)
    if not (directory / "info.json").is_file():
        _build(cfg, directory, key, names, files, tokenizer, log)
    dtype = json.loads((directory / "info.json").read_text()).get("dtype", "uint16")
    test = _read_split(directory, "test", dtype) if (directory / "test.bin").is_file() else None
    corpus = Corpus(_read_split(directory, "train", dtype), _read_split(directory, "val", dtype), test=test)
    corpus.names = _read_names(directory, corpus)
    return corpus
