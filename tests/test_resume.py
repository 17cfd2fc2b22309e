"""Interrupted training resumes to the same metrics as an uninterrupted run (CPU kernels are deterministic)."""

import json
import os
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from ropebench.cli.app import app

runner = CliRunner()
STEPS = ["train.steps=12", "train.ckpt_interval=4", "train.log_interval=2", "train.eval_interval=4"]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def comparable(records):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def train_in_subprocess(args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ropebench", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint_step(run_dir, step, proc, timeout=120):
    import torch

    deadline = time.time() + timeout
    while time.time() < deadline:
        path = run_dir / "checkpoint.pt"
        if path.is_file():
            try:
                if torch.load(path, weights_only=True)["step"] >= step:
                    return
            except Exception:
                pass  # mid-replace: try again
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_resume_matches_uninterrupted(tiny_overrides, tmp_path):
    # Long enough that the kill lands mid-run, after the first checkpoint.
    args = [*tiny_overrides, *STEPS, "train.steps=400", "train.ckpt_interval=40", "train.eval_interval=40",
            "train.log_interval=20", "train.threads=1"]
    reference = tmp_path / "reference"
    assert runner.invoke(app, ["train", *args, f"hydra.run.dir={reference}"]).exit_code == 0

    killed = tmp_path / "killed"
    proc = train_in_subprocess([*args, f"hydra.run.dir={killed}"])
    wait_for_checkpoint_step(killed, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.json").exists()

    result = runner.invoke(app, ["train", *args, f"resume={killed}"])
    assert result.exit_code == 0, result.output
    assert comparable(metrics(killed)) == comparable(metrics(reference))
    assert json.loads((killed / "final.json").read_text())["val_loss"] == \
        json.loads((reference / "final.json").read_text())["val_loss"]


def test_sigint_saves_a_checkpoint_and_resume_finishes(tiny_overrides, tmp_path):
    args = [*tiny_overrides, *STEPS, "train.steps=200", "train.ckpt_interval=1000", "train.threads=1"]
    run_dir = tmp_path / "interrupted"
    proc = train_in_subprocess([*args, f"hydra.run.dir={run_dir}"])
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out and f"ropebench resume {run_dir}" in out
    import torch

    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 200  # saved on SIGINT, not at a checkpoint interval
    result = runner.invoke(app, ["train", *args, "train.steps=200", f"resume={run_dir}"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "final.json").read_text())["steps"] == 200


def test_resume_with_a_different_model_is_refused(tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny_overrides, *STEPS, "train.steps=200", "train.ckpt_interval=4", "train.threads=1"]
    proc = train_in_subprocess([*args, f"hydra.run.dir={run_dir}"])
    wait_for_checkpoint_step(run_dir, 4, proc)
    proc.kill()
    proc.wait()
    result = runner.invoke(app, ["train", *args, "model.n_layer=2", f"resume={run_dir}"])
    assert result.exit_code != 0
    assert "cannot change model.n_layer: 1 → 2" in result.stderr
