"""wandb, for real in offline mode: a run records its wandb run's id; eval-length and passkey on the finished run log
into that same wandb run (resumed by the id); an offline run ends with the command that uploads it; in a sweep the
group is the sweep directory and the names are the runs' directory names."""

import json
import re

from typer.testing import CliRunner

from ropebench.cli.app import app

runner = CliRunner()


def _offline_runs(run_dir):
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_evaluations_log_into_the_run_s_own_wandb_run(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *tiny_overrides, "logger.wandb.mode=offline", f"hydra.run.dir={run}"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((run / "wandb_run.json").read_text())
    assert recorded["mode"] == "offline" and recorded["project"] == "ropebench"
    first = _offline_runs(run)
    assert len(first) == 1 and first[0].name.endswith(recorded["id"])
    assert f"upload with: wandb sync {first[0]}" in result.output  # the hint names the offline run
    result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16,32", "--max-tokens", "128"])
    assert result.exit_code == 0, result.output
    resumed = [p for p in _offline_runs(run) if p not in first]
    # The same wandb run, resumed (wandb adds "-1" to the directory when both started in the same second).
    assert len(resumed) == 1 and re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{recorded['id']}(-\d+)?", resumed[0].name)
    assert list(resumed[0].glob("*.wandb")) and "upload with: wandb sync" in result.stderr
    assert json.loads((run / "wandb_run.json").read_text()) == recorded


def test_a_run_without_wandb_gets_no_wandb_files(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", *tiny_overrides, f"hydra.run.dir={run}"]).exit_code == 0
    result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16", "--max-tokens", "128"])
    assert result.exit_code == 0 and not (run / "wandb").exists() and not (run / "wandb_run.json").exists()


def test_sweep_runs_are_grouped_by_their_sweep_directory(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    sweep = tmp_path / "sweeps" / "mine"
    result = runner.invoke(app, ["sweep", "compare", *tiny_overrides, "train.steps=2", "pe=rope,alibi",
                                 "eval.multiples=[1]", "logger.wandb.mode=offline", f"hydra.sweep.dir={sweep}"])
    assert result.exit_code == 0, result.output
    for name in ("pe=rope", "pe=alibi"):
        (offline,) = _offline_runs(sweep / name)
        record = next(offline.glob("*.wandb")).read_bytes()  # the run record wandb sync uploads: group and name
        assert b"sweeps/mine" in record and name.encode() in record, name
