"""Guards that keep a run a record: a continuation cannot end before its checkpoint, final.json is valid JSON, a
schedule that never peaks says so, export-hf never replaces a run, benchmark counts are checked, and a refused
init_from names what matters. Every run here is trained for real through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ropebench.bench.cli import bench_app
from ropebench.cli.app import app
from ropebench.run.trainer import Trainer
from tests.helpers import refused

runner = CliRunner()
STOP_AT = 6  # the step at which the interrupted run gets its Ctrl-C: a logging and evaluation step
LONG = ["train.steps=12", "train.ckpt_interval=100"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime: a refused command must leave both as they were."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def strict_json(path: Path):
    """The file parsed as JSON proper: NaN and Infinity are Python's extension, not JSON."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("guards")


@pytest.fixture(scope="module")
def base(tiny_overrides, root):
    """A finished RoPE run (6 steps, warmup 2) and the result of the command that trained it."""
    run = root / "base"
    result = ok(invoke("train", *tiny_overrides, "pe=rope", "eval.after_train=false", f"hydra.run.dir={run}"))
    return run, result


@pytest.fixture(scope="module")
def interrupted_run(tiny_overrides, root) -> Path:
    """A 12-step run stopped by one Ctrl-C after step 6 (a real SIGINT to the trainer's handler), as from a
    terminal: its checkpoint is at step 6, no final.json."""
    run = root / "interrupted"
    original = Trainer.train_step

    def train_step(self, step_fn):
        loss = original(self, step_fn)
        if self.step == STOP_AT:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train_step", train_step)
        result = invoke("train", *tiny_overrides, *LONG, f"hydra.run.dir={run}")
    assert result.exit_code == 130, result.output
    assert not (run / "final.json").exists()
    return run


@pytest.fixture
def interrupted(interrupted_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(interrupted_run, copy)
    return copy


# ---- 1. a continuation cannot end before the step its checkpoint reached ------------------------------------

def test_resume_below_the_reached_step_is_refused_and_changes_nothing(interrupted, tiny_overrides):
    before = snapshot(interrupted)
    for command in (["resume", interrupted], ["train", f"resume={interrupted}"],
                    ["train", *tiny_overrides, f"hydra.run.dir={interrupted}"]):  # the same experiment again
        line = refused(invoke(*command, "train.steps=5"), "train.steps=5", f"step {STOP_AT}", logs=True)
        assert str(interrupted) in line
        assert snapshot(interrupted) == before
    # Still continuable afterwards, to any length from the reached step on.
    ok(invoke("resume", interrupted, "train.steps=8"))
    final = strict_json(interrupted / "final.json")
    assert final["steps"] == 8 and final["continued"] == ["train.steps: 12 → 8"]
    assert final["train_loss"] is not None and final["val_loss"] is not None


def test_resume_at_the_reached_step_finishes_with_the_metrics_of_that_step(interrupted):
    ok(invoke("resume", interrupted, f"train.steps={STOP_AT}"))
    final = strict_json(interrupted / "final.json")
    logged = [r for r in map(json.loads, (interrupted / "metrics.jsonl").read_text().splitlines())
              if r["step"] == STOP_AT]
    assert final["steps"] == STOP_AT and len(logged) == 1
    assert final["train_loss"] == logged[0]["train_loss"] and final["val_loss"] == logged[0]["val_loss"]
    # A finished record: more steps are refused in one line, naming the way (a new run from its weights).
    refused(invoke("resume", interrupted, "train.steps=12"), f"has finished its {STOP_AT} steps", "init_from=")


# ---- 2. final.json is JSON: no NaN when no step was trained -------------------------------------------------

def test_a_run_that_trains_no_step_writes_null_losses(base, tiny_overrides, tmp_path):
    source, _ = base
    run = tmp_path / "step0"
    result = ok(invoke("train", *tiny_overrides, f"init_from={source}", "train.steps=0", "eval.after_train=false",
                       f"hydra.run.dir={run}"))
    final = strict_json(run / "final.json")
    assert final["steps"] == 0 and final["train_loss"] is None and final["val_loss"] is None
    assert final["init_from"]["steps"] == 6
    assert warnings(result) == []  # warmup_steps=2 >= steps=0, but nothing is trained: nothing to warn about


# ---- 3. a warmup as long as the run says so, and the schedule is unchanged ----------------------------------

@pytest.mark.parametrize("warmup,expected", [
    (10, "the learning rate never reaches train.lr=0.002"),
    (4, "the learning rate reaches train.lr=0.002 only at the last step and never decays"),
])
def test_a_warmup_not_below_the_steps_warns_once(tiny_overrides, tmp_path, warmup, expected):
    run = tmp_path / "short"
    result = ok(invoke("train", *tiny_overrides, "train.steps=4", f"train.warmup_steps={warmup}",
                       "eval.after_train=false", f"hydra.run.dir={run}"))
    assert warnings(result) == [f"warning: train.warmup_steps={warmup} is not below train.steps=4: {expected}; "
                                "set train.warmup_steps lower"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # lr logged at step s is the one step s-1 trained with: linear warmup, exactly as before the warning
    assert [(r["step"], r["lr"]) for r in records] == [(s, pytest.approx(0.002 * s / warmup)) for s in (2, 4)]


def test_a_warmup_below_the_steps_is_silent(base):
    _, result = base
    assert warnings(result) == []


# ---- 4. export-hf --force never replaces a run or a sweep ---------------------------------------------------

def _copy_of_run(source: Path, target: Path, names: tuple[str, ...]) -> Path:
    target.mkdir(parents=True)
    for name in names:
        shutil.copy(source / name, target / name)
    return target


RUN_LIKE = {  # what makes a directory a run's, each alone
    "config": ("config.yaml",),
    "checkpoint": ("checkpoint.pt",),
    "weights+final": ("model.safetensors", "final.json"),
}


@pytest.mark.parametrize("kind", list(RUN_LIKE))
def test_export_hf_never_replaces_a_run_directory(base, tmp_path, kind):
    pytest.importorskip("transformers")
    source, _ = base
    out = _copy_of_run(source, tmp_path / "other", RUN_LIKE[kind])
    before = snapshot(out)
    refused(invoke("export-hf", source, out, "--force"), f"'{out}' is a ropebench run directory", "--force")
    assert snapshot(out) == before


def test_export_hf_never_replaces_a_sweep(base, tmp_path):
    pytest.importorskip("transformers")
    source, _ = base
    sweep = tmp_path / "sweep"
    job = sweep / "2024-01-01" / "pe=rope,seed=0"
    shutil.copytree(source, job)
    (sweep / "notes.txt").write_text("mine")
    before = snapshot(sweep)
    refused(invoke("export-hf", source, sweep, "--force"), f"'{sweep}' holds the ropebench run '{job}'")
    assert snapshot(sweep) == before


def test_export_hf_force_still_replaces_an_earlier_export(base, tmp_path):
    pytest.importorskip("transformers")
    source, _ = base
    out = tmp_path / "hf"
    ok(invoke("export-hf", source, out))
    (out / "stale.txt").write_text("from before")
    refused(invoke("export-hf", source, out), "holds an earlier export", "--force")
    ok(invoke("export-hf", source, out, "--force"))
    assert (out / "ropebench_export.json").is_file() and not (out / "stale.txt").exists()


# ---- 5. benchmark counts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,expected", [
    (["rope", "--reps", "0"], "--reps must be positive, got 0"),
    (["rope", "--reps", "-1"], "--reps must be positive, got -1"),
    (["train", "--warmup", "-2"], "--warmup must be 0 or more (-1: 10 on CUDA, 2 on CPU), got -2"),
    (["eval", "--train-len", "-8"], "--train-len must be positive (or 0: the preset's), got -8"),
    (["eval", "--reps", "-1"], "--reps must be positive, got -1"),
])
def test_bench_counts_are_checked_in_one_line(args, expected):
    refused(runner.invoke(bench_app, [*args, "--device", "cpu"]), expected)


# ---- 6. a refused init_from names the encoding, not every key only one encoding has -------------------------

def test_another_encoding_is_named_once(base, tiny_overrides, tmp_path):
    source, _ = base
    run = tmp_path / "alibi"
    line = refused(invoke("train", *tiny_overrides, "pe=alibi", f"init_from={source}", f"hydra.run.dir={run}"),
                   "pe.name: rope → alibi")
    assert "<unset>" not in line and "pe.base" not in line and not run.exists()
    before = snapshot(source)
    line = refused(invoke("train", *tiny_overrides, "pe=alibi", f"hydra.run.dir={source}"),
                   "already holds a run with other settings (pe.name: rope → alibi)")
    assert "<unset>" not in line and snapshot(source) == before
