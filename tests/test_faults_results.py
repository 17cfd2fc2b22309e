"""Faults and bad input (issue 9) after training: bad evaluation and report options, damaged run files, what
is written (a NaN never replaces a good checkpoint; files readable by others; relocatable configs). The same
assertions as tests/test_faults.py: exit code, one error line naming the bad value, no traceback, nothing lost.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from test_faults import UNCREATABLE, eval_lengths, invoke, ok, refused, snapshot, train_finished, warnings

from ropebench.run import checkpoint
from ropebench.run.trainer import Trainer


@pytest.fixture(scope="module")
def finished(corpus_dir, tiny_overrides, tmp_path_factory) -> Path:
    return train_finished(tmp_path_factory.mktemp("faults") / "finished", corpus_dir, tiny_overrides)


@pytest.fixture
def copy(finished, tmp_path):
    """A private copy of the finished run, without the files named."""
    def make(*drop: str) -> Path:
        run = tmp_path / "run"
        shutil.copytree(finished, run, ignore=shutil.ignore_patterns(*drop))
        return run
    return make


# ---- 4. evaluation and reports: bad options, damaged files ---------------------------------------------------

@pytest.mark.parametrize("args,expected", [
    (["eval-length", "{run}", "--lengths", "²"], "evaluation length '²' is not a positive integer"),
    (["eval-length", "{run}", "--lengths", "16,٣"], "evaluation length '٣' is not a positive integer"),
    (["table", "{run}", "--lengths", "²"], "evaluation length '²' is not a positive integer"),
    (["eval-length", "{run}", "--device", "tpu"], "unknown device 'tpu'"),
    pytest.param(["eval-length", "{run}", "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")),
    (["eval-length", "{run}", "--max-tokens", "-5"], "tokens per length -5"),
    (["eval-length", "{run}", "--stride", "8"], "--stride applies to --protocol sliding only"),
    (["passkey", "{run}", "--trials", "0"], "--trials must be a positive integer, got 0"),
    (["passkey", "{run}", "--depths", "1.5"], "passkey depth 1.5 is outside [0, 1]"),
    (["plot", "{run}", "--out", "{tmp}/fig.jpg"], "cannot write a figure as '.jpg'"),
    (["plot", "{run}", "--out", UNCREATABLE + "/fig.png"], "cannot create output directory"),
    (["plot", "{run}", "--band", "foo"], "unknown band 'foo'"),
    (["plot", "decay", "{run}", "{run}"], "plot decay takes at most one run directory, got 2"),
    (["table", "{run}", "--format", "xml"], "unknown format 'xml'"),
])
def test_bad_evaluation_option_changes_nothing(finished, tmp_path, args, expected):
    before = snapshot(finished)
    refused(invoke(*[a.format(run=finished, tmp=tmp_path) for a in args]), expected)
    assert snapshot(finished) == before and list(tmp_path.iterdir()) == []  # no figure either


DAMAGED_CONFIG = {"malformed": ("model: [unclosed\n", "is not valid YAML"),
                  "incomplete": ("model:\n  n_layer: 1\n", "is incomplete (no pe, data, train, eval)"),
                  "a_list": ("- model\n- pe\n", "is incomplete (no mapping)")}
ON_A_RUN = [["eval-length", "{run}"], ["passkey", "{run}", "--lengths", "64"], ["resume", "{run}"],
            ["plot", "decay", "{run}"]]


def refused_on(run: Path, command: list[str], *expected: str) -> None:
    before = snapshot(run)
    refused(invoke(*[a.format(run=run) for a in command]), *expected)
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", sorted(DAMAGED_CONFIG))
@pytest.mark.parametrize("command", ON_A_RUN)
def test_damaged_config_is_one_line(copy, damage, command):
    run = copy()
    text, expected = DAMAGED_CONFIG[damage]
    (run / "config.yaml").write_text(text)
    refused_on(run, command, expected, "the run's config is damaged")


@pytest.mark.parametrize("name,garbage,command,expected", [
    *[("model.safetensors", b"garbage", command, "are damaged or not safetensors") for command in ON_A_RUN
      if command[0] != "resume"],
    ("final.json", b"{not json", ["resume", "{run}"], "final.json' is unreadable"),
])
def test_corrupt_run_file_is_one_line_and_keeps_results(copy, name, garbage, command, expected):
    run = copy()
    (run / name).write_bytes(garbage)
    refused_on(run, command, expected)


@pytest.mark.parametrize("checkpoint_bytes,command,expected", [
    (None, ["resume", "{run}"], ("has no checkpoint to continue from",)),
    (b"garbage", ["resume", "{run}"], ("checkpoint", "is corrupt or unreadable")),
    (None, ["eval-length", "{run}"], ("is unfinished", "ropebench resume")),
])
def test_unfinished_run_is_one_line(copy, checkpoint_bytes, command, expected):
    run = copy("final.json", "model.safetensors", "checkpoint.pt")
    if checkpoint_bytes is not None:
        (run / "checkpoint.pt").write_bytes(checkpoint_bytes)
    refused_on(run, command, *expected)


EVAL_HEADER = "pe,train_seq_len,eval_len,protocol,stride,rope_scaling,ppl,nll,n_tokens,status"


@pytest.mark.parametrize("damage,kept", [
    ("pe,eval_len\nrope,16\n", []),  # columns missing: the old rows cannot be read
    ("\x00\xff garbage\n,,\n", []),
    ("append", [16, 32]),  # a garbage row after good ones: the good ones stay
])
def test_damaged_eval_csv_keeps_the_new_rows(copy, damage, kept):
    run = copy()
    path = run / "eval_length.csv"
    path.write_bytes(path.read_bytes() + b"rope,16,x,,\n" if damage == "append" else damage.encode("latin-1"))
    result = ok(invoke("eval-length", run, "--lengths", "24"))
    (warning,) = warnings(result)
    assert str(path) in warning
    assert eval_lengths(run) == sorted([*kept, 24])
    table = ok(invoke("table", run))
    assert "| rope |" in table.stdout and len(warnings(table)) <= 1
    ok(invoke("plot", run, "--out", run / "fig.png"))


def test_damaged_passkey_csv_keeps_the_new_rows(copy, tmp_path):
    run = copy()
    (run / "passkey.csv").write_text("pe,eval_len,depth\ngarbage\n")
    refused(invoke("plot", run, "--passkey", "--out", tmp_path / "pk.png"), "no successful passkey", logs=True)
    result = ok(invoke("passkey", run, "--lengths", "64", "--depths", "0.5", "--trials", "2"))
    (warning,) = warnings(result)
    assert "passkey.csv" in warning
    with open(run / "passkey.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["eval_len"], r["depth"], r["status"]) for r in rows] == [("64", "0.5", "ok")]


# ---- 5. what is written: NaN never replaces a good checkpoint; readable, relocatable records ------------------

@pytest.mark.parametrize("log_interval,ckpt_interval", [(1, 1), (100, 1), (100, 2)])
def test_a_nan_loss_never_overwrites_the_last_good_checkpoint(tiny_overrides, tmp_path, monkeypatch, log_interval,
                                                            ckpt_interval):
    """train.lr=1e6 diverges within a few steps; the loss is synced only at logging and checkpoint steps, so the
    first of those at or after the first non-finite loss must stop training -- before anything is saved."""
    saved, finite = [], []  # (step, checkpoint bytes) after every save; finiteness of each step's loss
    real_save, real_step = checkpoint.save, Trainer.train_step

    def save(run_dir, state):
        real_save(run_dir, state)
        saved.append((state["step"], (Path(run_dir) / "checkpoint.pt").read_bytes()))

    def train_step(self, step_fn):
        loss = real_step(self, step_fn)
        finite.append(bool(torch.isfinite(loss)))
        return loss

    monkeypatch.setattr(checkpoint, "save", save)
    monkeypatch.setattr(Trainer, "train_step", train_step)
    run_dir = tmp_path / "run"
    error = refused(invoke("train", *tiny_overrides, "train.lr=1e6", "train.warmup_steps=0", "train.steps=20",
                           f"train.log_interval={log_interval}", f"train.ckpt_interval={ckpt_interval}",
                           f"hydra.run.dir={run_dir}"), "training diverged at step", "lower train.lr", logs=True)
    first_nan = finite.index(False) + 1
    synced = next(s for s in range(first_nan, 21) if s % log_interval == 0 or s % ckpt_interval == 0)
    assert error.startswith(f"error: training diverged at step {synced} ") and len(finite) == synced
    assert all(step < first_nan for step, _ in saved)
    if saved:  # the file on disk is the last one written before the loss went non-finite
        assert "the last good checkpoint is kept" in error
        assert (run_dir / "checkpoint.pt").read_bytes() == saved[-1][1]
        assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == saved[-1][0]
    else:  # nothing worth keeping was written: no run directory left behind
        assert "no checkpoint was saved" in error and not run_dir.exists()


@pytest.mark.parametrize("name", ["config.yaml", "final.json", "checkpoint.pt", "model.safetensors", "metrics.jsonl",
                                  "eval_length.csv", "eval_positions.csv"])
def test_result_files_are_readable_by_others(finished, name):
    assert (finished / name).stat().st_mode & 0o044 == 0o044


def test_relative_data_paths_are_stored_resolved(finished, corpus_dir, copy, tmp_path, monkeypatch):
    import yaml

    assert yaml.safe_load((finished / "config.yaml").read_text())["data"]["paths"] == [str(corpus_dir.resolve())]
    run = copy()
    monkeypatch.chdir(tmp_path)  # where the relative path would name nothing
    ok(invoke("eval-length", run, "--lengths", "24"))
    assert eval_lengths(run) == [16, 24, 32]
