"""data=text_files reads record files as documents (each row of a .jsonl or .parquet, in a folder or given as a
file), and every token cache is keyed by what the files hold -- never by how their path is spelled, where they
were copied or when they were touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ropebench.data import load_corpus
from ropebench.errors import UserError
from ropebench.run.config import DataConfig

datasets = pytest.importorskip("datasets")


def data_cfg(cache: Path, **keys):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {"cache_dir": str(cache), **keys})


def texts_of(corpus) -> dict[str, str]:
    """Document name -> its text, from the token streams (bytes) of every split (train, val and test)."""
    out = {}
    for side in corpus.names:
        split = getattr(corpus, side)
        for name, s, e in zip(corpus.names[side], split.starts.tolist(), split.ends.tolist()):
            out[name] = bytes(np.asarray(split.tokens[s:e]).astype(np.uint8)).decode("utf-8")
    return out


@pytest.fixture(scope="module")
def texts(corpus_dir) -> list[str]:
    """Real, distinct documents: the test corpus's files."""
    return [f.read_text(encoding="utf-8") for f in sorted(corpus_dir.glob("*.py"))]


@pytest.fixture
def folder(texts, tmp_path) -> Path:
    """A folder of one text file, a .jsonl of 20 rows and a .parquet of 15 rows (plus a field that is not text)."""
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "notes.txt").write_text(texts[0], encoding="utf-8")
    with open(root / "rows.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(texts[1:21]):
            f.write(json.dumps({"text": text, "id": i}) + "\n")
    datasets.Dataset.from_dict({"text": texts[21:36], "id": list(range(15))}).to_parquet(str(root / "sub.parquet"))
    return root


def test_record_files_in_a_folder_are_one_document_per_row(folder, texts, tmp_path):
    corpus = load_corpus(data_cfg(tmp_path / "cache", name="text_files", source="text_files", paths=[str(folder)],
                                  val_fraction=0.3), log=lambda *a: None)
    got = texts_of(corpus)
    want = {"notes.txt": texts[0], **{f"rows.jsonl#{i}": t for i, t in enumerate(texts[1:21])},
            **{f"sub.parquet#{i}": t for i, t in enumerate(texts[21:36])}}
    assert got == want and corpus.names["val"]


def test_a_jsonl_given_as_a_file_is_its_rows_read_from_text_field(texts, tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps({"content": t}) + "\n" for t in texts[:30]), encoding="utf-8")
    cfg = data_cfg(tmp_path / "cache", name="text_files", source="text_files", paths=[str(path)],
                   text_field="content", val_fraction=0.3)
    assert texts_of(load_corpus(cfg, log=lambda *a: None)) == {f"one.jsonl#{i}": t for i, t in enumerate(texts[:30])}
    cfg.text_field = "body"
    with pytest.raises(UserError, match=r"has no field 'body' \(data.text_field\); its fields: content"):
        load_corpus(cfg, log=lambda *a: None)


def _caches(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.is_dir() and p.name.startswith(("text_files-", "hf-"))}


def test_caches_are_keyed_by_content_not_by_path_spelling_or_time(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load = lambda path, **k: load_corpus(  # noqa: E731
        data_cfg(cache, name="text_files", source="text_files", paths=[str(path)], val_fraction=0.3, **k),
        log=lambda *a: None)
    load(folder)
    first = _caches(cache)
    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "copy")
    monkeypatch.chdir(tmp_path / "elsewhere")
    load(Path("copy"))  # another place, spelled relative
    (copy / "notes.txt").touch()  # touched, not changed
    load(copy)
    assert _caches(cache) == first
    with open(copy / "rows.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more document of its own, long enough to be kept apart"}) + "\n")
    load(copy)
    assert len(_caches(cache)) == 2  # other contents: another cache
    # data=hf on local files: the same rule (data.path spelled relative or absolute).
    parquet = {"name": "hf", "source": "hf", "val_fraction": 0.3}
    load_corpus(data_cfg(cache, path=str(copy / "sub.parquet"), **parquet), log=lambda *a: None)
    load_corpus(data_cfg(cache, path="copy/sub.parquet", **parquet), log=lambda *a: None)
    assert len(_caches(cache)) == 3
