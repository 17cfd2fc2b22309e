"""Runs that used to go silently wrong (issue 22, items 6 and 7), through the real CLI: a misspelled group value
trained as something else, a key added to the config and never read, non-finite numbers trained with, a corpus
changed under a run being continued, a torn result row read as a wrong number, two settings averaged as seeds of one
extension method, and `export-hf --force` replacing a directory that is not an export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import invoke, ok, refused


@pytest.mark.parametrize("command,override,expected", [
    ("train", "extend=yarm", "unknown extend 'yarm'; choose one of: alibi, direct"),
    ("sweep", "extend=yarn,yarm", "unknown extend 'yarm'"),
    ("train", "sweep=compar", "unknown sweep 'compar'; choose one of: backends, compare"),
    ("train", "launcher=joblibb", "unknown launcher 'joblibb'"),
    ("train", "+foo=bar", "'+foo=bar': ropebench's config has a fixed set of keys"),
    ("train", "++train.foo=1", "'++train.foo=1'"),
    ("train", "train.lr=inf", "train.lr must be a finite number, got inf"),
    ("train", "pe.base=inf", "pe.base must be a finite number, got inf"),
    ("train", "pe.base=nan", "pe.base must be a finite number, got nan"),
    ("train", "train.weight_decay=-inf", "train.weight_decay must be a finite number"),
    ("train", "eval.multiples=[1,inf]", "eval.multiples must be a finite number"),
    ("train", "data.name=../..", "data.name='../..' names the token cache's directory"),
    ("train", "data.name=a/b", "without a path separator"),
])
def test_a_config_that_would_run_as_something_else_is_refused(command, override, expected, tiny_overrides,
                                                              tmp_path):
    where = "hydra.sweep.dir" if command == "sweep" else "hydra.run.dir"
    args = ["sweep", "extend"] if command == "sweep" else ["train"]
    refused(invoke(*args, *tiny_overrides, override, f"{where}={tmp_path / 'out'}"), expected)
    assert list(tmp_path.iterdir()) == []


def test_data_cache_stays_inside_the_cache_directory(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from ropebench.data import load_corpus
    from ropebench.errors import UserError
    from ropebench.run.config import DataConfig

    cfg = OmegaConf.structured(DataConfig(name="../../escaped", cache_dir=str(tmp_path / "cache")))
    with pytest.raises(UserError, match="names the token cache's directory"):
        load_corpus(cfg, log=lambda *a: None)
    assert not any(tmp_path.rglob("escaped*"))


@pytest.fixture(scope="module")
def interrupted_on_own_text(corpus_dir, tiny_overrides, tmp_path_factory) -> tuple[Path, Path]:
    """A run stopped after its last checkpoint, trained on a copy of the corpus (to change under it)."""
    root = tmp_path_factory.mktemp("silent")
    text = root / "text"
    shutil.copytree(corpus_dir, text)
    run = root / "run"
    overrides = [f"data.paths=[{text}]" if o.startswith("data.paths=") else o for o in tiny_overrides]
    ok(invoke("train", *overrides, "train.steps=4", f"hydra.run.dir={run}"))
    (run / "final.json").unlink()
    (run / "model.safetensors").unlink()
    return run, text


def test_resume_after_the_corpus_changed_is_refused(interrupted_on_own_text, tmp_path):
    run, text = interrupted_on_own_text
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    first = sorted(text.iterdir())[0]
    original = first.read_bytes()
    try:
        first.write_bytes(original + b"\n# one more line\n")
        before = (copy / "checkpoint.pt").read_bytes()
        refused(invoke("resume", copy, "train.steps=6"), "its text changed since it started", logs=True)
        assert (copy / "checkpoint.pt").read_bytes() == before and not (copy / "final.json").exists()
    finally:
        first.write_bytes(original)
    ok(invoke("resume", copy, "train.steps=6"))  # the same text again: it continues


def test_a_torn_last_row_is_skipped_not_read_as_a_shorter_number(tmp_path):
    """A crash (or a full disk) that cut the last row at '54.0' of '54.06' must not give a perplexity of 54.0."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {name: tiny}\npe: {name: rope}\ndata: {name: stdlib}\n"
                                     "train: {seq_len: 16}\neval: {max_tokens: 0}\nseed: 0\n")
    header = "pe,train_seq_len,eval_len,protocol,stride,rope_scaling,ppl,nll,status\n"
    (run / "eval_length.csv").write_text(header + "rope,16,16,nonoverlapping,16,none,3.0,1.1,ok\n"
                                                  "rope,16,32,nonoverlapping,32,none,54.0")
    result = ok(invoke("table", run))
    assert "54.0" not in result.stdout and "3.00" in result.stdout
    assert "skipped 1 damaged row (line 3)" in result.stderr


def _extension_run(root: Path, name: str, lr: float, seed: int, ppl: float) -> Path:
    """An extension run's record, as `ropebench sweep extend` leaves it: config (YaRN, from a base), eval rows."""
    run = root / name
    run.mkdir()
    config = {"model": {"name": "tiny", "n_embd": 32}, "data": {"name": "stdlib"}, "seed": seed,
              "pe": {"name": "rope", "scaling": {"type": "yarn", "factor": 4.0,
                                                 "original_max_position_embeddings": 16}},
              "train": {"seq_len": 64, "steps": 50, "lr": lr}, "eval": {"max_tokens": 0},
              "init_from": f"/base/pe=rope,seed={seed}", "init_from_seq_len": 16}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "final.json").write_text('{"status": "finished", "steps": 50}')
    (run / "model.safetensors").write_bytes(b"")
    label = "yarn(factor=4,original_max_position_embeddings=16)"
    (run / "eval_length.csv").write_text("pe,train_seq_len,eval_len,protocol,stride,rope_scaling,ppl,nll,status\n"
                                         f'rope,64,64,nonoverlapping,64,"{label}",{ppl},1.0,ok\n')
    return run


def test_the_extension_report_keeps_two_learning_rates_apart(tmp_path):
    from ropebench.report.extend import summary_rows

    runs = [_extension_run(tmp_path, f"lr{lr}-s{seed}", lr, seed, ppl) for lr, seed, ppl in
            ((1e-3, 0, 60.0), (1e-3, 1, 62.0), (3e-3, 0, 150.0), (3e-3, 1, 160.0))]
    rows = {r["method"]: r for r in summary_rows(runs)}
    assert sorted(rows) == ["YaRN (lr=0.001)", "YaRN (lr=0.003)"]
    assert rows["YaRN (lr=0.001)"]["ppl_n"] == 2 and rows["YaRN (lr=0.001)"]["ppl_mean"] == pytest.approx(61.0)
    assert rows["YaRN (lr=0.003)"]["ppl_mean"] == pytest.approx(155.0)


def test_export_force_replaces_only_an_earlier_export(tiny_overrides, tmp_path):
    pytest.importorskip("transformers")
    run = tmp_path / "run"
    ok(invoke("train", *tiny_overrides, "train.steps=2", f"hydra.run.dir={run}"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused(invoke("export-hf", run, mine, "--force"), "is not an earlier export", "ropebench_export.json")
    assert (mine / "notes.txt").read_text() == "keep me"
    ok(invoke("export-hf", run, tmp_path / "hf"))
    refused(invoke("export-hf", run, tmp_path / "hf"), "holds an earlier export", "--force")
    (tmp_path / "hf" / "stale.txt").write_text("from before")
    ok(invoke("export-hf", run, tmp_path / "hf", "--force"))
    assert not (tmp_path / "hf" / "stale.txt").exists() and (tmp_path / "hf" / "config.json").is_file()
