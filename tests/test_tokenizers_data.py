"""Any dataset (`data=hf`) and any tokenizer (`data.tokenizer`), issue 11 parts 3 and 4. Every data set is built on
disk inside the test (parquet, jsonl, a save_to_disk directory, a directory of split files) from the conftest's
real text, and the tokenizer is a small BPE trained here with the `tokenizers` library: nothing is downloaded."""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.data import corpus as corpus_module
from ropebench.data import hf_source, load_corpus, load_tokenizer, tokenizer, vocab_size_for
from ropebench.run.config import DataConfig
from ropebench.run.rundir import RunDir
from ropebench.run.validate import validate_config
from tests.helpers import refused as refused_with_logs

datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

runner = CliRunner()
EOS = "<|endoftext|>"
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def refused(result, *expected: str) -> str:
    """Exit code 2, one `error:` line (the last; progress lines may come before it) holding each expected text."""
    return refused_with_logs(result, *expected, logs=True)


def data_cfg(cache: Path, **keys):
    """A `data` node as Hydra composes it (schema defaults under the given keys)."""
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {"cache_dir": str(cache), **keys})


def documents(split) -> list[np.ndarray]:
    return [np.asarray(split.tokens[s:e]) for s, e in zip(split.starts.tolist(), split.ends.tolist())]


def save_bpe(texts: list[str], directory: Path, vocab_size: int) -> Path:
    """A byte-level BPE trained on ``texts``, saved as a transformers tokenizer directory with an eos token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def texts(corpus_dir) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.glob("*.py"))]


@pytest.fixture(scope="module")
def sources(texts, tmp_path_factory) -> dict[str, Path]:
    """The same rows (text in a `content` column) as parquet, jsonl, a save_to_disk directory, and split files."""
    root = tmp_path_factory.mktemp("hf_data")
    ds = datasets.Dataset.from_dict({"content": texts, "row": list(range(len(texts)))})
    ds.to_parquet(str(root / "docs.parquet"))
    ds.to_json(str(root / "docs.jsonl"))
    ds.save_to_disk(str(root / "arrow"))
    (root / "splits").mkdir()
    ds.select(range(30)).to_parquet(str(root / "splits" / "train.parquet"))
    ds.select(range(30, len(texts))).to_parquet(str(root / "splits" / "validation.parquet"))
    return {"parquet": root / "docs.parquet", "jsonl": root / "docs.jsonl", "arrow": root / "arrow",
            "splits": root / "splits"}


@pytest.fixture(scope="module")
def bpe(texts, tmp_path_factory) -> Path:
    return save_bpe(texts, tmp_path_factory.mktemp("tok") / "bpe400", 400)


def hf_overrides(tiny_overrides: list[str], *extra: str) -> list[str]:
    return [o for o in tiny_overrides if not o.startswith("data")] + ["data=hf", *extra]


# ---- bytes stay what they were ------------------------------------------------------------------------------

def test_bytes_corpus_is_each_documents_utf8_bytes_under_a_key_of_its_content(corpus_dir, tmp_path):
    # A two-way split (test_fraction 0, as in every run config written before the test split existed).
    cfg = data_cfg(tmp_path, name="text_files", source="text_files", paths=[str(corpus_dir)], test_fraction=0.0)
    corpus = load_corpus(cfg, log=lambda *a: None)
    for side, split in (("train", corpus.train), ("val", corpus.val)):
        assert split.tokens.dtype == np.uint16
        for name, doc, end in zip(corpus.names[side], documents(split), split.ends.tolist()):
            assert doc.tolist() == list((corpus_dir / name).read_bytes())  # independent of ropebench's code
            assert split.tokens[end] == 256  # the end-of-document token
    # The cache's key: the files' names and contents (and, for bytes, no tokenizer) -- not where they are.
    contents = hashlib.sha1()
    for f in sorted(corpus_dir.glob("*.py")):
        contents.update(f"{f.name}:{hashlib.sha1(f.read_bytes()).hexdigest()}\n".encode())
    key = hashlib.sha1(f"v{corpus_module.CACHE_VERSION}:text_files:0.1::\n{contents.hexdigest()}".encode())
    assert (tmp_path / f"text_files-{key.hexdigest()[:16]}" / "info.json").is_file()
    assert vocab_size_for(cfg) == 257 and vocab_size_for(OmegaConf.create({"source": "stdlib"})) == 257


def test_committed_runs_still_read_as_bytes():
    """Run configs recorded before data=hf (no tokenizer, hub_* keys) validate and build a 257-row model."""
    cfg = RunDir(ROOT / "results" / "rotate_values" / "runs" / "pe=rope,seed=0").read_config()
    assert "hub_path" in cfg.data and "tokenizer" not in cfg.data
    validate_config(cfg)
    assert vocab_size_for(cfg.data) == 257


def test_a_pre_hf_wikitext_config_reads_as_articles_of_the_hubs_own_split(tmp_path):
    legacy = OmegaConf.create({"name": "wikitext103", "source": "hub", "paths": [], "hub_path": "Salesforce/wikitext",
                               "hub_name": "wikitext-103-raw-v1", "text_column": "text", "val_fraction": 0.1,
                               "cache_dir": str(tmp_path)})
    assert hf_source.options(legacy) == hf_source.HFOptions(
        "Salesforce/wikitext", "wikitext-103-raw-v1", "train", "validation", "text", "wikitext_articles")
    assert hf_source.needs_network(legacy)
    old_key = hashlib.sha1(b"v1:hub:Salesforce/wikitext:wikitext-103-raw-v1").hexdigest()[:16]
    assert corpus_module._hf_key(legacy, load_tokenizer("bytes")) == old_key  # its cache stays valid


# ---- any dataset --------------------------------------------------------------------------------------------

def test_every_local_format_gives_the_same_documents(sources, texts, tmp_path):
    streams = {}
    for kind in ("parquet", "jsonl", "arrow"):
        cfg = data_cfg(tmp_path, name="hf", source="hf", path=str(sources[kind]), text_field="content")
        corpus = load_corpus(cfg, log=lambda *a: None)
        for side, split in (("train", corpus.train), ("val", corpus.val), ("test", corpus.test)):
            for name, doc in zip(corpus.names[side], documents(split)):
                assert doc.tolist() == list(texts[int(name.split(":")[1])].encode("utf-8"))
        streams[kind] = (corpus.names, corpus.train.tokens.tolist(), corpus.val.tokens.tolist(),
                         corpus.test.tokens.tolist())
        assert sum(len(corpus.names[side]) for side in ("train", "val", "test")) == len(texts)
        assert corpus.names["val"] and corpus.names["test"]
    assert streams["parquet"] == streams["jsonl"] == streams["arrow"]  # one row, one document, wherever it lives


def test_val_split_is_used_whole_and_min_doc_tokens_drops_short_documents(sources, texts, tmp_path):
    cfg = data_cfg(tmp_path, name="hf", source="hf", path=str(sources["splits"]), text_field="content",
                   val_split="validation")
    corpus = load_corpus(cfg, log=lambda *a: None)
    assert corpus.names["val"] == [f"validation:{i}" for i in range(len(texts) - 30)]  # in the data set's order
    assert [d.tolist() for d in documents(corpus.val)] == [list(t.encode()) for t in texts[30:]]
    shortest = sorted(len(t.encode()) for t in texts[:30])[5]
    cfg.min_doc_tokens = shortest
    kept = load_corpus(cfg, log=lambda *a: None)
    # The test documents are drawn from the data set's train split (it has no test split here).
    assert len(kept.names["train"]) + len(kept.names["test"]) == sum(
        len(t.encode()) >= shortest for t in texts[:30]) == 25
    assert kept.train.doc_lengths().min() >= shortest


def test_wikitext_articles_are_rebuilt_from_lines(tmp_path):
    lines = [" = Alpha = \n", " Alpha is a letter . \n", " = = History = = \n", " Old . \n", "", " = Beta = \n",
             " Beta follows . \n"] * 12
    datasets.Dataset.from_dict({"text": lines}).to_parquet(str(tmp_path / "wiki.parquet"))
    cfg = data_cfg(tmp_path / "cache", name="hf", source="hf", path=str(tmp_path / "wiki.parquet"),
                   documents="wikitext_articles", val_fraction=0.3, test_fraction=0.0)
    corpus = load_corpus(cfg, log=lambda *a: None)
    docs = [bytes(d.astype(np.uint8)).decode() for d in documents(corpus.train) + documents(corpus.val)]
    assert len(docs) == 24 and all(d.startswith((" = Alpha = \n", " = Beta = \n")) for d in docs)
    assert " = = History = = \n" in docs[0] or " = = History = = \n" in docs[1]  # subheadings stay inside


# ---- any tokenizer ------------------------------------------------------------------------------------------

def test_bpe_run_trains_evaluates_and_exports(tiny_overrides, sources, bpe, texts, tmp_path):
    run = tmp_path / "bpe-run"
    ok(invoke("train", *hf_overrides(tiny_overrides, f"data.path={sources['parquet']}", "data.text_field=content",
                                     f"data.tokenizer={bpe}"), "pe=rope", f"hydra.run.dir={run}"))
    cfg = RunDir(run).read_config()
    assert cfg.data.tokenizer == str(bpe) and vocab_size_for(cfg.data) == 400
    ok(invoke("eval-length", run, "--lengths", "16,32"))
    with open(run / "eval_length.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["tokenizer"] for r in rows] == [str(bpe)] * 2 and all(r["status"] == "ok" for r in rows)
    # The corpus is the bytes corpus' documents (the split is drawn on the text), in fewer, subword tokens.
    subword = load_corpus(cfg.data, log=lambda *a: None)
    as_bytes = load_corpus(OmegaConf.merge(cfg.data, {"tokenizer": "bytes"}), log=lambda *a: None)
    assert subword.names == as_bytes.names
    assert subword.val.n_tokens < as_bytes.val.n_tokens / 2
    ids = load_tokenizer(str(bpe)).encode(texts[int(subword.names["val"][0].split(":")[1])])
    assert documents(subword.val)[0].tolist() == ids and subword.val.tokens[subword.val.ends[0]] == 0  # eos id
    assert all(0 < int(r["n_tokens"]) <= subword.val.n_tokens for r in rows)

    out = tmp_path / "exported"
    ok(invoke("export-hf", run, out))
    exported = transformers.AutoTokenizer.from_pretrained(str(out))
    assert exported.encode(texts[0], add_special_tokens=False) == load_tokenizer(str(bpe)).encode(texts[0])
    assert transformers.AutoConfig.from_pretrained(str(out)).vocab_size == 400


def test_the_cache_is_keyed_by_the_tokenizers_content(sources, texts, bpe, tmp_path):
    base = {"name": "hf", "source": "hf", "path": str(sources["parquet"]), "text_field": "content"}
    other = save_bpe(texts, tmp_path / "bpe300", 300)
    copy = tmp_path / "same-bpe-elsewhere"
    copy.mkdir()
    for f in bpe.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    names = {}
    for label, tok in (("bytes", "bytes"), ("bpe", str(bpe)), ("other", str(other)), ("copy", str(copy))):
        load_corpus(data_cfg(tmp_path / "cache", **base, tokenizer=tok), log=lambda *a: None)
        names[label] = {p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("hf-")}
    assert len(names["bytes"]) == 1 and len(names["bpe"]) == 2 and len(names["other"]) == 3
    assert names["copy"] == names["other"]  # the same tokenizer under another path reuses its cache


def test_ids_past_uint16_are_cached_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(70_000)} | {EOS: 70_000, "[UNK]": 70_001}
    words = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token=EOS, unk_token="[UNK]").save_pretrained(
        str(tmp_path / "words"))
    ids = [[(i * 7919 + j * 104_729) % 70_000 for j in range(200)] for i in range(40)]
    datasets.Dataset.from_dict({"text": [" ".join(f"w{k}" for k in row) for row in ids]}).to_json(
        str(tmp_path / "w.jsonl"))
    cfg = data_cfg(tmp_path / "cache", name="hf", source="hf", path=str(tmp_path / "w.jsonl"),
                   tokenizer=str(tmp_path / "words"), val_fraction=0.3)
    assert vocab_size_for(cfg) == 70_002
    corpus = load_corpus(cfg, log=lambda *a: None)
    assert corpus.train.tokens.dtype == np.uint32 and corpus.val.tokens[corpus.val.ends[0]] == 70_000
    for name, doc in zip(corpus.names["train"], documents(corpus.train)):
        assert doc.tolist() == ids[int(name.split(":")[1])]


# ---- bad input: one line, exit 2, nothing written -----------------------------------------------------------

@pytest.mark.parametrize("case,expected", [
    ("no_tokenizer_dir", ("tokenizer directory", "does not exist")),
    ("tokenizer_is_a_file", ("is a file",)),
    ("tokenizer_without_eos", ("no end-of-text token",)),
    ("no_data_path", ("data.path", "does not exist")),
    ("no_data_file_here", ("data.path 'nowhere.jsonl' does not exist",)),  # a file name, not a Hub name
    ("data_path_unset", ("data=hf needs data.path",)),
    ("text_field_missing", ("data.text_field 'text'", "columns: content, row")),
    ("split_missing", ("data.split 'test'", "splits: train")),
    ("passkey_with_tokenizer", ("data=passkey is byte-level",)),
    # Hub names, offline (as every test is): one line naming what could not be reached
    ("hub_tokenizer_offline", ("could not load tokenizer 'nobody/no-tokenizer'", "a Hub name needs network")),
    ("hub_data_offline", ("could not load 'nobody/no-dataset' from the Hugging Face Hub (needs network)",)),
])
def test_bad_data_and_tokenizer_input_is_one_line(case, expected, tiny_overrides, sources, bpe, texts, tmp_path):
    bare = tmp_path / "bare"
    if case == "tokenizer_without_eos":
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_file=str(bpe / "tokenizer.json")).save_pretrained(str(bare))
    extra = {
        "no_tokenizer_dir": [f"data.path={sources['parquet']}", "data.text_field=content",
                             f"data.tokenizer={tmp_path / 'missing'}"],
        "tokenizer_is_a_file": [f"data.path={sources['parquet']}", "data.text_field=content",
                                f"data.tokenizer={bpe / 'tokenizer.json'}"],
        "tokenizer_without_eos": [f"data.path={sources['parquet']}", "data.text_field=content",
                                  f"data.tokenizer={bare}"],
        "no_data_path": [f"data.path={tmp_path / 'nowhere.parquet'}"],
        "no_data_file_here": ["data.path=nowhere.jsonl"],
        "hub_tokenizer_offline": [f"data.path={sources['parquet']}", "data.text_field=content",
                                  "data.tokenizer=nobody/no-tokenizer"],
        "hub_data_offline": ["data.path=nobody/no-dataset"],
        "data_path_unset": [],
        "text_field_missing": [f"data.path={sources['parquet']}"],
        # a save_to_disk directory of named splits says which it has
        "split_missing": [f"data.path={tmp_path / 'dict'}", "data.split=test", "data.text_field=content"],
    }
    if case == "split_missing":
        datasets.DatasetDict({"train": datasets.load_from_disk(str(sources["arrow"]))}).save_to_disk(
            str(tmp_path / "dict"))
    args = (["data=passkey", "data.tokenizer=" + str(bpe)] if case == "passkey_with_tokenizer"
            else hf_overrides(tiny_overrides, *extra[case]))
    run = tmp_path / "run"
    refused(invoke("train", *args, f"hydra.run.dir={run}"), *expected)
    assert not run.exists()


def test_without_transformers_a_tokenizer_is_one_line_naming_the_extra(tiny_overrides, sources, bpe, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an install without the [hf] extra sees
    tokenizer._load_hf.cache_clear()
    run = tmp_path / "run"
    try:
        refused(invoke("train", *hf_overrides(tiny_overrides, f"data.path={sources['parquet']}",
                                              "data.text_field=content", f"data.tokenizer={bpe}"),
                       f"hydra.run.dir={run}"), "needs the [hf] extra: pip install -e '.[hf]'")
    finally:
        tokenizer._load_hf.cache_clear()
    assert not run.exists()
