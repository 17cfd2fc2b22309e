"""Errors that used to escape as tracebacks (issue 22, item 8): the file system refusing a write (read-only, full, a
name too long, a directory where a file goes), configs that do not resolve or lack a key, damaged weights and
logs, sizes out of range. Each is one `error:` line and a non-zero exit code, through the real CLI, and what was
written before is kept. Read-only and full disks bind root too (CI runs as root): an immutable directory
(``chattr +i``) or a read-only mount, a file-size limit (RLIMIT_FSIZE, ``ulimit -f``) and a small tmpfs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import file_size_limit, invoke, ok, read_only, refused, small_disk, snapshot


@pytest.fixture(scope="module")
def finished(tiny_overrides, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("errors") / "run"
    ok(invoke("train", *tiny_overrides, "train.steps=4", f"hydra.run.dir={run}"))
    ok(invoke("eval-length", run, "--lengths", "16"))
    return run


@pytest.fixture(scope="module")
def interrupted(finished, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("errors") / "interrupted"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("final.json", "model.safetensors", "*.csv"))
    return run


@pytest.fixture(scope="module")
def export(finished, tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("errors") / "hf"
    ok(invoke("export-hf", finished, out))
    # Its text tokenized once here: the faults below hit the results, not the shared token cache.
    ok(invoke("eval-length", out, "--out", out.parent / "warm", "--lengths", "16"))
    return out


def commands(run: Path, work: Path, export: Path | None) -> dict[str, list]:
    """Every command that writes, writing into ``work`` (``run``: a copy of a finished or interrupted run there)."""
    cases = {
        "eval-length": ["eval-length", run, "--lengths", "16,32"],
        "passkey": ["passkey", run, "--lengths", "64", "--depths", "0", "--trials", "1"],
        "resume": ["resume", run, "train.steps=6"],
        "plot": ["plot", run, "--out", work / "fig.png"],
        "export-hf": ["export-hf", run, work / "hf"],
    }
    if export is not None:
        cases["hf-eval"] = ["eval-length", export, "--out", work / "out", "--lengths", "16"]
    return cases


def _setup(case, finished, interrupted, export, work: Path) -> list:
    if case == "hf-eval" and export is None:
        pytest.skip("needs transformers")
    run = work / "run"
    shutil.copytree(interrupted if case == "resume" else finished, run)
    return commands(run, work, export)[case]


CASES = ["eval-length", "passkey", "resume", "plot", "export-hf", "hf-eval"]


@pytest.mark.parametrize("case", CASES)
def test_a_read_only_directory_is_one_line_and_changes_nothing(case, finished, interrupted, request, tmp_path):
    export = request.getfixturevalue("export") if case == "hf-eval" else None
    args = _setup(case, finished, interrupted, export, tmp_path)
    before = snapshot(tmp_path)
    with read_only(tmp_path / "run"), read_only(tmp_path):
        result = invoke(*args)
    line = refused(result, code=result.exit_code, logs=True)
    assert result.exit_code in (1, 2) and ("read-only" in line or "not permitted" in line or "not writable" in line
                                           or "permission denied" in line), line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", CASES)
def test_a_full_disk_is_one_line_and_keeps_what_was_written(case, finished, interrupted, request, tmp_path):
    export = request.getfixturevalue("export") if case == "hf-eval" else None
    args = _setup(case, finished, interrupted, export, tmp_path)
    before = snapshot(tmp_path / "run")
    with file_size_limit(64):  # every file this command writes outgrows it at once
        result = invoke(*args)
    line = refused(result, "file too large", code=1, logs=True)
    assert "what was already written is kept" in line or "continue with" in line, line
    kept = snapshot(tmp_path / "run")
    assert {name: kept[name] for name in before if name in kept} == {
        name: data for name, data in before.items() if name in kept}
    assert set(before) - set(kept) <= {"metrics.jsonl"}  # resume rewrites its log: never loses it whole
    assert not [p.name for p in tmp_path.rglob(".*.tmp")]  # no temporary file left behind


def test_a_full_disk_during_training_says_so_and_keeps_the_last_checkpoint(tiny_overrides, tmp_path):
    """A real full disk (a small tmpfs): the second checkpoint does not fit beside the first; the first is kept,
    and once there is room `resume` finishes the run from it."""
    import subprocess

    with small_disk(tmp_path / "disk", "400k") as disk:
        run = disk / "run"
        result = invoke("train", *tiny_overrides, "train.steps=6", "train.ckpt_interval=2", f"hydra.run.dir={run}")
        line = refused(result, "no space left on the device", "its last checkpoint is kept",
                       f"ropebench resume {run}", code=1, logs=True)
        assert "unexpected pos" not in line
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
        assert subprocess.run(["mount", "-o", "remount,size=8m", str(disk)]).returncode == 0
        ok(invoke("resume", run))
        assert json.loads((run / "final.json").read_text())["steps"] == 6


@pytest.mark.parametrize("case", ["train", "plot", "export-hf"])
def test_a_path_too_long_is_one_line(case, finished, tiny_overrides, tmp_path):
    long = tmp_path / ("x" * 300) / "run"
    args = {"train": ["train", *tiny_overrides, f"hydra.run.dir={long}"],
            "plot": ["plot", finished, "--out", long / "fig.png"],
            "export-hf": ["export-hf", finished, long]}[case]
    refused(invoke(*args), "file name too long", code=1)


def test_a_directory_where_a_file_goes_is_one_line(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "eval_length.csv").unlink()
    (run / "eval_length.csv").mkdir()
    refused(invoke("eval-length", run, "--lengths", "16"), "eval_length.csv", "a directory is there", code=1,
            logs=True)
    (tmp_path / "figs" / "ppl_vs_length.png").mkdir(parents=True)  # where `plot --out figs` puts its figure
    refused(invoke("plot", finished, "--out", tmp_path / "figs"), "ppl_vs_length.png", "a directory is there",
            code=1)


@pytest.mark.parametrize("override,expected", [
    ("data.cache_dir=${oc.env:ROPEBENCH_TEST_UNSET}", "does not resolve: "),
    ("train.lr=${bogus:1}", "does not resolve: Unsupported interpolation type bogus"),
    ("train.batch_size=100000000000", "exceed this machine's memory"),
    ("seed=100000000000000000000", "out of range"),
    ("train.steps=100000000000000000000", "out of range"),
])
def test_configs_that_cannot_run_are_refused_before_anything_is_written(override, expected, tiny_overrides, tmp_path):
    refused(invoke("train", *tiny_overrides, override, f"hydra.run.dir={tmp_path / 'run'}"), expected)
    assert not (tmp_path / "run").exists()


def test_a_run_config_without_a_key_is_one_line(finished, tmp_path):
    import yaml

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["train"]["seq_len"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    refused(invoke("eval-length", run, "--lengths", "16"), "incomplete (no train.seq_len)")
    del config["model"]["n_embd"]
    config["train"]["seq_len"] = 16
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    refused(invoke("eval-length", run, "--lengths", "16"), "n_embd")


def test_truncated_weights_are_called_damaged(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    weights = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    line = refused(invoke("eval-length", run, "--lengths", "16"), "model.safetensors", "damaged or not safetensors")
    assert "do not match" not in line


def test_a_truncated_hugging_face_checkpoint_is_one_line(export, tmp_path):
    model = tmp_path / "hf"
    shutil.copytree(export, model)
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    refused(invoke("eval-length", model, "--out", tmp_path / "out", "--lengths", "16"), "cannot load the model")
    assert not (tmp_path / "out").exists()


def test_a_torn_metrics_log_does_not_stop_resume(interrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"step": 5, "train_lo')
    result = ok(invoke("resume", run, "train.steps=6"))
    assert "metrics.jsonl': skipped 1 damaged line" in result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
