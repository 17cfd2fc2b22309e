"""Weights & Biases runs for real in offline mode and writes its run inside the run directory;
metrics.jsonl stays the source of truth."""

import json

from typer.testing import CliRunner

from ropebench.cli.app import app

runner = CliRunner()


def test_offline_wandb_run_lands_in_the_run_directory(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", *tiny_overrides, "logger.wandb.mode=offline", "eval.after_train=true",
                                 "logger.wandb.tags=[test]", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb")), "wandb wrote no run file"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6


def test_online_without_credentials_falls_back_to_offline(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", *tiny_overrides, "train.steps=2", "logger.wandb.mode=online",
                                 f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    assert result.output.count("no wandb credentials") == 1
    assert list((run_dir / "wandb").glob("offline-run-*"))
