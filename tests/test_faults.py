"""Faults and bad input (issue 9), through the real CLI. Each case asserts the exit code (2 for a user error),
one `error:` line on stderr naming the bad value, no traceback, and that nothing was lost or changed: a refused
command leaves the run directory byte-identical (contents and mtimes), a config that fails validation leaves no
run directory behind.

Covered elsewhere, not repeated: two concurrent eval-length processes keep every row
(test_probe_runner.py::test_two_processes_merging_into_one_file_keep_every_row); the encoding and RoPE backend
registries refuse duplicate names (test_model.py::test_duplicate_encoding_name_is_refused,
test_rope_backends.py::test_duplicate_backend_name_is_refused); a MemoryError with an empty message
(test_probe_runner.py::test_memory_error_at_one_length_keeps_the_others).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ropebench.cli.app import app
from tests.helpers import refused

runner = CliRunner()
ROOT = os.geteuid() == 0  # chmod does not stop root
UNCREATABLE = "/proc/ropebench-test/run"  # mkdir fails there even for root
LENGTHS = [16, 20, 24, 32, 64, 128, 256]  # eval.multiples x train.seq_len=16


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def eval_lengths(run: Path) -> list[int]:
    with open(run / "eval_length.csv", newline="") as f:
        return [int(r["eval_len"]) for r in csv.DictReader(f)]


def warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning")]


def train_finished(run_dir: Path, corpus_dir: Path, tiny_overrides: list[str]) -> Path:
    """A finished run trained from the corpus' parent with a *relative* data path and umask 022, then evaluated
    at 16 and 32. Tests that damage a run work on copies."""
    relative = [f"data.paths=[{corpus_dir.name}]" if o.startswith("data.paths=") else o for o in tiny_overrides]
    cwd, mask = os.getcwd(), os.umask(0o022)
    try:
        os.chdir(corpus_dir.parent)
        ok(invoke("train", *relative, f"hydra.run.dir={run_dir}"))
        ok(invoke("eval-length", run_dir, "--lengths", "16,32"))
    finally:
        os.chdir(cwd)
        os.umask(mask)
    return run_dir


@pytest.fixture(scope="module")
def finished(corpus_dir, tiny_overrides, tmp_path_factory) -> Path:
    return train_finished(tmp_path_factory.mktemp("faults") / "finished", corpus_dir, tiny_overrides)


@pytest.fixture(scope="module")
def interrupted(finished, tmp_path_factory) -> Path:
    """The same run as if stopped after its last checkpoint (step 6): no final.json, no weights, no results."""
    run = tmp_path_factory.mktemp("faults") / "pe=rope,seed=0"  # a sweep job's name: '=' and ','
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("final.json", "model.safetensors", "*.csv"))
    return run


@pytest.fixture(scope="module")
def sweep_job(tiny_overrides, tmp_path_factory) -> Path:
    """A one-job sweep (evaluated after training) whose job directory is named `pe=rope,seed=0`."""
    sweep_dir = tmp_path_factory.mktemp("faults") / "sweep"
    ok(invoke("sweep", "compare", *tiny_overrides, "train.steps=4", "pe=choice(rope)", "seed=choice(0)",
              f"hydra.sweep.dir={sweep_dir}"))
    job = sweep_dir / "pe=rope,seed=0"
    assert eval_lengths(job) == LENGTHS
    return job


# ---- 1. a run's config is written once; a refused command changes nothing ----------------------------------

@pytest.mark.parametrize("overrides,expected", [
    (["model.n_embd=64"], ("model.n_embd: 32 → 64",)),
    (["pe=alibi"], ("pe: rope → alibi",)),
    (["model=small"], ("model: tiny → small",)),
    (["train.lr=1"], ("train.lr: 0.002 → 1",)),
    (["bogus.key=1"], ("bogus.key: <unset> → 1",)),
    (["train.steps=abc"], ("train.steps=abc must be an integer",)),
    (["train.steps=7.5"], ("train.steps=7.5 must be an integer",)),
    (["train.compile=3"], ("train.compile=3 must be true or false",)),
    (["train.steps=0"], ("train.steps must be a positive integer (0 only with init_from=RUN), got 0",)),
    (["logger.wandb.mode=bogus"], ("unknown logger.wandb.mode 'bogus'",)),
    (["--cfg", "job"], ("'--cfg' does not apply to a continued run",)),
    (["-m"], ("'-m'", "ropebench sweep")),
])
def test_refused_resume_changes_nothing(interrupted, overrides, expected):
    before = snapshot(interrupted)
    refused(invoke("resume", interrupted, *overrides), *expected)
    assert snapshot(interrupted) == before


@pytest.mark.parametrize("command", ["resume", "train resume=", "train hydra.run.dir="])
def test_a_finished_run_is_already_finished_and_unchanged(finished, corpus_dir, tiny_overrides, command):
    before = snapshot(finished)
    if command == "resume":
        result = invoke("resume", finished)
    elif command == "train resume=":
        result = invoke("train", f"resume={finished}")
    else:  # the original command again: the same experiment, so nothing to do
        result = invoke("train", *tiny_overrides, f"hydra.run.dir={finished}")
    assert "already finished" in ok(result).stderr
    assert snapshot(finished) == before


def test_train_into_a_run_of_another_experiment_is_refused(finished, tiny_overrides):
    before = snapshot(finished)
    refused(invoke("train", *tiny_overrides, "model.n_embd=64", f"hydra.run.dir={finished}"),
            "already holds a run with other settings", "model.n_embd: 32 → 64")
    assert snapshot(finished) == before


def test_sweep_relaunch_with_other_settings_reports_the_job_failed(sweep_job, tiny_overrides):
    before = snapshot(sweep_job)
    result = invoke("sweep", "compare", *tiny_overrides, "train.steps=4", "model.n_embd=64", "pe=choice(rope)",
                    "seed=choice(0)", f"hydra.sweep.dir={sweep_job.parent}")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert any(f"failed {sweep_job.name}" in line and "model.n_embd: 32 → 64" in line
               for line in result.output.splitlines()), result.output
    assert snapshot(sweep_job) == before


def test_relaunch_completes_an_evaluation_cut_short(sweep_job, tiny_overrides, tmp_path):
    """A job killed during its after-train evaluation: the relaunch evaluates exactly the missing lengths."""
    shutil.copytree(sweep_job.parent, tmp_path / "sweep")
    job = tmp_path / "sweep" / sweep_job.name
    kept = (job / "eval_length.csv").read_text().splitlines()[:3]  # header and the first two lengths
    (job / "eval_length.csv").write_text("\n".join(kept) + "\n")
    record = {name: (job / name).read_bytes() for name in ("config.yaml", "final.json", "model.safetensors")}
    result = ok(invoke("sweep", "compare", *tiny_overrides, "train.steps=4", "pe=choice(rope)", "seed=choice(0)",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}"))
    assert "already finished" in result.stderr
    assert eval_lengths(job) == LENGTHS
    assert (job / "eval_length.csv").read_text().splitlines()[:3] == kept  # measured rows are not redone
    assert {name: (job / name).read_bytes() for name in record} == record


def test_train_resume_takes_a_sweep_job_directory_as_typed(interrupted, tmp_path):
    job = tmp_path / interrupted.name
    shutil.copytree(interrupted, job)
    config = (job / "config.yaml").read_bytes()
    ok(invoke("train", f"resume={job}", "train.steps=8"))  # '=' and ',' would break Hydra's grammar
    final = json.loads((job / "final.json").read_text())
    assert final["steps"] == 8 and final["continued"] == ["train.steps: 6 → 8"]
    assert (job / "config.yaml").read_bytes() == config


# ---- 2. bad settings: one line, exit 2, no run directory ----------------------------------------------------

@pytest.mark.parametrize("override,expected", [
    ("train.log_interval=0", ("train.log_interval must be a positive integer, got 0",)),
    ("train.eval_interval=0", ("train.eval_interval must be a positive integer, got 0",)),
    ("train.ckpt_interval=0", ("train.ckpt_interval must be a positive integer, got 0",)),
    ("train.eval_batches=0", ("train.eval_batches must be a positive integer, got 0",)),
    ("train.warmup_steps=-1", ("train.warmup_steps must be >= 0, got -1",)),
    ("train.min_lr=1", ("train.min_lr must be in [0, train.lr=0.002], got 1.0",)),
    ("train.lr=-1", ("train.lr must be positive, got -1.0",)),
    ("train.steps=1.5", ("train.steps=1.5",)),
    ("model.dropout=1.5", ("model.dropout must be in [0, 1), got 1.5",)),
    ("model.n_head=0", ("model.n_head must be a positive integer, got 0",)),
    ("eval.max_tokens=-5", ("eval.max_tokens must be >= 0 (0: every token), got -5",)),
    ("eval.multiples=[0]", ("eval.multiples must be positive numbers, got [0",)),
    ("eval.region_multiple=0.5", ("eval.region_multiple must be >= 1, got 0.5",)),
    ("model.attention=bad", ("'model.attention=bad'", "auto, sdpa, flex")),
    ("train.dtype=fp8", ("'train.dtype=fp8'", "float32")),
    ("logger.wandb.mode=bogus", ("'logger.wandb.mode=bogus'", "offline")),
    ("data.val_fraction=2", ("data.val_fraction must be in (0, 1), got 2.0",)),
    ("seed=abc", ("'seed=abc'",)),
    ("pe=rope,alibi", ("'pe=rope,alibi' sweeps several values", "ropebench sweep")),
    ("model=tiny,small", ("'model=tiny,small' sweeps several values",)),
    ("train.device=tpu", ("unknown device 'tpu'",)),  # found by the trainer, still exit 2 and no directory
    ("pe.base=-1", ("pe.base must be positive, got -1.0",)),  # found by the encoding
    ("data.val_fraction=0.001", ("has no validation documents",)),  # found by the data split
])
def test_bad_setting_leaves_no_run_directory(tiny_overrides, tmp_path, override, expected):
    run_dir = tmp_path / "run"
    refused(invoke("train", *tiny_overrides, override, f"hydra.run.dir={run_dir}"), *expected, logs=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,key,value,expected", [
    ("train", "hydra.run.dir", "{tmp}/file", "is a file, not a directory"),
    ("train", "hydra.run.dir", "{tmp}/file/run", "'{tmp}/file' is a file"),
    ("train", "hydra.run.dir", "", "hydra.run.dir is empty"),
    ("train", "hydra.run.dir", UNCREATABLE, "'/proc' is not writable"),
    ("sweep", "hydra.sweep.dir", "", "hydra.sweep.dir is empty"),
    ("sweep", "hydra.sweep.dir", "{tmp}/file", "is a file, not a directory"),
])
def test_output_directory_that_cannot_be_one(tiny_overrides, tmp_path, command, key, value, expected):
    (tmp_path / "file").write_text("mine")
    args = ["compare", "train.steps=2"] if command == "sweep" else []
    refused(invoke(command, *args, *tiny_overrides, f"{key}={value.format(tmp=tmp_path)}"),
            expected.format(tmp=tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and (tmp_path / "file").read_text() == "mine"


@pytest.mark.skipif(ROOT, reason="root writes through chmod")
@pytest.mark.parametrize("command", ["train", "plot"])
def test_unwritable_directory(finished, tiny_overrides, tmp_path, command):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        args = ["train", *tiny_overrides, f"hydra.run.dir={locked / 'run'}"] if command == "train" else \
            ["plot", finished, "--out", locked / "sub" / "fig.png"]
        refused(invoke(*args), str(locked))
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_validation_split_shorter_than_seq_len_is_blamed_before_any_step(tiny_overrides, tmp_path):
    from omegaconf import OmegaConf

    from ropebench.data import load_corpus
    from ropebench.run.config import DataConfig

    corpus = tmp_path / "texts"
    corpus.mkdir()
    for i in range(20):  # distinct documents, so the near-duplicate split keeps ~10% of them for validation
        (corpus / f"doc{i:02d}.txt").write_text(" ".join(f"w{(i * 7919 + j * 104729) % 100003}" for j in range(400)))
    data = OmegaConf.structured(DataConfig(name="text_files", source="text_files", paths=[str(corpus)]))
    splits = load_corpus(data, log=lambda *a: None)
    seq_len = splits.val.n_tokens  # longer than validation can serve, well within training
    assert splits.train.n_tokens > 2 * seq_len
    overrides = [f"data.paths=[{corpus}]" if o.startswith("data.paths=") else o for o in tiny_overrides]
    result = invoke("train", *overrides, f"train.seq_len={seq_len}", "train.batch_size=1",
                    f"hydra.run.dir={tmp_path / 'run'}")
    refused(result, f"train.seq_len={seq_len} is longer than the validation data", logs=True)
    assert "training pe=" not in result.stderr and not (tmp_path / "run").exists()  # no step was spent


# ---- 3. Hydra's flags, --version, shell completion ----------------------------------------------------------

def test_cfg_job_prints_the_composed_config_and_creates_nothing(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok(invoke("train", "--cfg", "job", *tiny_overrides, "pe=alibi"))
    assert "n_embd: 32" in result.stdout and "name: alibi" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,expected", [
    (["train", "-m", "pe=rope"], ("'-m'", "ropebench sweep")),
    (["train", "--multirun", "pe=rope"], ("'--multirun'", "ropebench sweep")),
    (["train", "--bogus"], ("unknown option '--bogus'",)),
    (["train", "--cfg", "job", "pe=foo"], ("unknown pe 'foo'",)),
    (["sweep", "compare", "--cfg", "job"], ("'--cfg'", "ropebench train")),
])
def test_hydra_flags_answer_in_one_line(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    refused(invoke(*args), *expected)
    assert list(tmp_path.iterdir()) == []


def test_version_is_the_package_version():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert ok(invoke("--version")).stdout == f"ropebench {version}\n"


@pytest.mark.parametrize("typed,expected", [("tr", "train"), ("eval", "eval-length eval-task"), ("pass", "passkey")])
def test_shell_completion_completes_commands(typed, expected):
    env = {"_ROPEBENCH_COMPLETE": "complete_bash", "COMP_WORDS": f"ropebench {typed}", "COMP_CWORD": "1"}
    assert ok(runner.invoke(app, [], prog_name="ropebench", env=env)).stdout.split() == expected.split()


def test_show_completion_prints_a_script():
    shellingham = pytest.importorskip("shellingham")
    try:
        shell = shellingham.detect_shell()[0]
    except shellingham.ShellDetectionFailure:
        pytest.skip("no shell to detect")
    script = ok(runner.invoke(app, ["--show-completion"], prog_name="ropebench")).stdout
    assert f"_ROPEBENCH_COMPLETE=complete_{shell}" in script
