"""``data=hf``: documents from any Hugging Face ``datasets`` source -- a Hub name (needs network), a directory
(``save_to_disk`` output, or data files that ``load_dataset`` understands), or parquet/json/jsonl/arrow/csv/txt
files (one path or a glob).

One row of ``data.text_field`` is one document, except with ``data.documents=wikitext_articles``: WikiText stores
one line per row, and articles are rebuilt at its top-level headings (the ``data=wikitext103`` preset). The
training documents come from ``data.split``; the validation ones from ``data.val_split`` when it is set (a data
set's own validation split, unchanged, as papers report), else from ``data.split`` by the document-level split
every other source uses (``ropebench.data.corpus``). Local sources never touch the network.

Run configs written before ``data=hf`` existed say ``source: hub`` with ``hub_path``, ``hub_name`` and
``text_column``; :func:`options` reads them as what they were: WikiText articles and the Hub's own split.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ropebench.data import hf_env
from ropebench.errors import UserError

BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow", ".csv": "csv", ".txt": "text"}
DOCUMENTS = ("rows", "wikitext_articles")


@dataclass(frozen=True)
class HFOptions:
    path: str
    subset: str  # the data set's configuration (load_dataset's ``name``); "" for its default
    split: str
    val_split: str  # "" splits ``split`` by document
    text_field: str
    documents: str
    test_split: str = ""  # "" draws the test documents from ``split`` (data.test_fraction)


def options(cfg) -> HFOptions:
    """The ``data=hf`` settings of a data config node, including a pre-``hf`` ``source: hub`` one."""
    if str(cfg.source) == "hub":
        return HFOptions(str(cfg.get("hub_path", "")), str(cfg.get("hub_name", "") or ""), "train", "validation",
                         str(cfg.get("text_column", "text")), "wikitext_articles")
    return HFOptions(str(cfg.get("path", "")), str(cfg.get("subset", "") or ""), str(cfg.get("split", "train")),
                     str(cfg.get("val_split", "") or ""), str(cfg.get("text_field", "text")),
                     str(cfg.get("documents", "rows")), str(cfg.get("test_split", "") or ""))


def is_local(path: str) -> bool:
    """A path on this machine (existing, path-shaped, a glob, or a data file's name) rather than a Hub name."""
    return hf_env.is_local(path) or Path(path).suffix.lower() in BUILDERS


def needs_network(cfg) -> bool:
    """Whether a data config names something on the Hub (its data set or its tokenizer)."""
    tokenizer = str(cfg.get("tokenizer", "bytes"))
    remote_tokenizer = tokenizer != "bytes" and not hf_env.is_local(tokenizer)
    if str(cfg.source) not in ("hf", "hub"):
        return remote_tokenizer
    return remote_tokenizer or not is_local(options(cfg).path)


def _files(path: str) -> list[Path]:
    """The files a local path names: itself, every file under a directory, or a glob's matches."""
    text = os.path.expanduser(path)
    if set("*?[") & set(text):
        return sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    root = Path(text)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.is_file() else []


def source_key(opts: HFOptions, cache_root: Path) -> str:
    """What identifies the documents: the settings, and for a local source each file's content under its name
    relative to the path given (``digest.files_key``) -- not the path itself, so `data/x` and `/home/me/data/x`
    (or a copy elsewhere) share one cache."""
    from ropebench.data.digest import files_key

    settings = {k: v for k, v in asdict(opts).items() if v or k != "test_split"}  # keys made before it stay valid
    if not is_local(opts.path):
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    settings["path"] = ""
    root = _root(opts.path)
    named = [(f.resolve().relative_to(root).as_posix() if f.resolve().is_relative_to(root) else f.name, f)
             for f in _files(opts.path)]
    return hashlib.sha1(f"{json.dumps(settings, sort_keys=True)}\n{files_key(named, cache_root)}".encode()).hexdigest()


def _root(path: str) -> Path:
    """The directory a local path's files are named from: itself, a file's folder, or a glob's fixed part."""
    text = os.path.expanduser(path)
    if set("*?[") & set(text):
        text = text[: min(text.index(c) for c in "*?[" if c in text)].rpartition("/")[0] or "."
    root = Path(text).resolve()
    return root if root.is_dir() else root.parent


def load_documents(opts: HFOptions, cache: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{"train": (names, texts)}``, plus ``"val"`` / ``"test"`` when ``val_split`` / ``test_split`` is set.
    Names are ``split:row`` (or ``split:article``), so the document-level split depends only on the data."""
    if opts.documents not in DOCUMENTS:
        raise UserError(f"unknown data.documents '{opts.documents}'; choose one of: {', '.join(DOCUMENTS)}")
    local = is_local(opts.path)
    datasets = hf_env.import_datasets(network=not local)
    wanted = {"train": opts.split, **({"val": opts.val_split} if opts.val_split else {}),
              **({"test": opts.test_split} if opts.test_split else {})}
    out = {}
    for side, split in wanted.items():
        texts = _column(_load_split(datasets, opts, split, local, cache), opts)
        texts = _articles(texts) if opts.documents == "wikitext_articles" else texts
        kept = [(i, t) for i, t in enumerate(texts) if t.strip()]
        out[side] = ([f"{split}:{i}" for i, _ in kept], [t for _, t in kept])
    return out


def _load_split(datasets, opts: HFOptions, split: str, local: bool, cache: Path):
    if not local:
        try:
            return datasets.load_dataset(opts.path, opts.subset or None, split=split, cache_dir=str(cache / "hf"))
        except Exception as exc:  # network or name problems: one clear line
            raise UserError(f"could not load '{opts.path}' from the Hugging Face Hub (needs network): "
                            f"{_first_line(exc)}") from None
    files = _files(opts.path)
    if not files:
        raise UserError(f"data.path '{opts.path}' does not exist (or holds no files)")
    try:
        return _load_local(datasets, opts, split, files, cache)
    except UserError:
        raise
    except Exception as exc:  # unreadable files, an unknown split: one line naming the path
        raise UserError(f"could not read data.path '{opts.path}' (split '{split}'): {_first_line(exc)}") from None


def _load_local(datasets, opts: HFOptions, split: str, files: list[Path], cache: Path):
    root = Path(os.path.expanduser(opts.path))
    if root.is_dir() and ((root / "dataset_dict.json").is_file() or (root / "state.json").is_file()):
        ds = datasets.load_from_disk(str(root))  # a save_to_disk directory: a DatasetDict or one Dataset
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise UserError(f"data.split '{split}' is not a split of '{opts.path}' (splits: {', '.join(ds)})")
            return ds[split]
        return ds
    if root.is_dir():  # data files: load_dataset infers the format, and the splits from the file names
        return datasets.load_dataset(str(root), opts.subset or None, split=split, cache_dir=str(cache / "hf"))
    builders = {BUILDERS.get(f.suffix.lower()) for f in files}
    if len(builders) != 1 or None in builders:
        raise UserError(f"data.path '{opts.path}' must name files of one format: "
                        f"{', '.join(sorted(BUILDERS))} (got {', '.join(sorted({f.suffix or f.name for f in files}))})")
    # Files given directly form the "train" split (datasets' convention).
    return datasets.load_dataset(builders.pop(), data_files=[str(f) for f in files], split=split,
                                 cache_dir=str(cache / "hf"))


def _column(ds, opts: HFOptions) -> list[str]:
    if opts.text_field not in ds.column_names:
        raise UserError(f"data.text_field '{opts.text_field}' is not a column of '{opts.path}' "
                        f"(columns: {', '.join(ds.column_names)})")
    values = ds[opts.text_field]
    wrong = next((v for v in values if v is not None and not isinstance(v, str)), None)
    if wrong is not None:
        raise UserError(f"data.text_field '{opts.text_field}' of '{opts.path}' holds {type(wrong).__name__} "
                        "values, not text")
    return [v or "" for v in values]


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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
