"""The documents of local files: the standard library's modules (data=stdlib) and the user's files and folders
(data=text_files) -- a text file is one document, a .jsonl or .parquet file one per row -- read through Hugging
Face ``datasets`` (undecodable bytes replaced, never fatal), each named relative to the directory it was found in."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from ropebench.data import hf_env
from ropebench.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".tex", ".json", ".csv", ".html", ".c", ".h")
# Files of records: each row's data.text_field is one document (datasets' builder for the suffix reads them).
RECORD_SUFFIXES = {".jsonl": "json", ".parquet": "parquet"}


def stdlib_files() -> tuple[Path, list[Path]]:
    """Every .py file of the running interpreter's standard library (third-party site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return root, files


def stdlib_named() -> tuple[list[str], list[Path]]:
    root, files = stdlib_files()
    return [f.relative_to(root).as_posix() for f in files], files


def user_files(paths) -> tuple[list[str], list[Path]]:
    """The text and record files under ``paths`` and their names: relative to the directory given (a file given
    by itself: its own name), so that `notes` and `/home/me/notes` name -- and split -- the same documents the
    same way."""
    if not paths:
        raise UserError("data=text_files needs data.paths=[FILE_OR_DIR,...]; none were given")
    names, files = [], []
    for raw in paths:
        path = Path(os.path.expanduser(str(raw)))
        if not path.exists():
            raise UserError(f"data path '{raw}' does not exist")
        if path.is_dir():
            readable = (*TEXT_SUFFIXES, *RECORD_SUFFIXES)
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in readable)
            if not found:
                raise UserError(f"data path '{raw}' holds no text files ({', '.join(readable)})")
            names += [p.relative_to(path).as_posix() for p in found]
            files += found
        else:
            names.append(path.name)
            files.append(path)
    return names, files


def _load_local_documents(files: list[Path], cache: Path):
    """One text per file, through datasets' text builder (undecodable bytes replaced, never fatal)."""
    if not files:
        return []
    datasets = hf_env.import_datasets()
    ds = datasets.load_dataset(
        "text", data_files=[str(f) for f in files], sample_by="document", encoding_errors="replace",
        split="train", cache_dir=str(cache / "hf"),
    )
    texts = ds["text"]
    if len(texts) != len(files):  # the split by name below pairs texts with files by position
        raise RuntimeError(f"datasets returned {len(texts)} documents for {len(files)} files")
    return texts


def _records(path: Path, name: str, field: str, cache: Path) -> tuple[list[str], list[str]]:
    """A .jsonl or .parquet file's documents: each row's ``field``, named ``name#row`` (empty rows skipped)."""
    datasets = hf_env.import_datasets()
    try:
        ds = datasets.load_dataset(RECORD_SUFFIXES[path.suffix.lower()], data_files=[str(path)], split="train",
                                   cache_dir=str(cache / "hf"))
    except Exception as exc:  # not JSON lines / not parquet: one line naming the file
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"data file '{path}' could not be read as {path.suffix} records: {detail}") from None
    if field not in ds.column_names:
        raise UserError(f"data file '{path}' has no field '{field}' (data.text_field); its fields: "
                        f"{', '.join(ds.column_names)}")
    rows = [(i, t) for i, t in enumerate(ds[field]) if isinstance(t, str) and t.strip()]
    return [f"{name}#{i}" for i, _ in rows], [t for _, t in rows]


def local_documents(cfg, names: list[str], files: list[Path], cache: Path) -> tuple[list[str], list[str]]:
    """Every document of the collected files and its name, in the files' order: a text file is one document,
    a record file one per row (``_records``)."""
    field = str(cfg.get("text_field", "text") or "text")
    plain = [i for i, f in enumerate(files) if f.suffix.lower() not in RECORD_SUFFIXES]
    texts = dict(zip(plain, _load_local_documents([files[i] for i in plain], cache)))
    out_names, out_texts = [], []
    for i, (name, path) in enumerate(zip(names, files)):
        found = ([name], [texts[i]]) if i in texts else _records(path, name, field, cache)
        out_names += found[0]
        out_texts += found[1]
    return out_names, out_texts
