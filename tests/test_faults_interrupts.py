"""Ctrl-C and SIGTERM (issue 22, item 9): a sweep whose jobs run in worker processes stops them when the signal
reaches its own process only (as `kill`, `timeout` and SLURM send it); a job stopped during its evaluation after
training ends with the sweep's continue line; an interrupted evaluation after training is completed by `resume`;
a sequential sweep prints one continue line, the sweep's."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from ropebench.eval.perplexity import PerplexityProbe
from ropebench.run.trainer import Trainer
from tests.helpers import invoke, ok

LENGTHS = [16, 20, 24, 32, 64, 128, 256]  # eval.multiples x train.seq_len=16


@pytest.fixture(scope="module")
def warm_corpus(tiny_overrides):
    """Tokenized once up front, so that the jobs side by side find the cache built."""
    from ropebench.cli.hydra_app import _compose
    from ropebench.data import load_corpus
    from ropebench.run.config import register_schemas

    register_schemas()
    load_corpus(_compose(tiny_overrides).data, log=lambda *a: None)
    return tiny_overrides


def _start_sweep(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "ROPEBENCH_LOCAL_JOBS": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ropebench", "sweep", "compare", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.time() + 300
    while not ready():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the sweep never got to {what}: {proc.stdout.read()}")
        time.sleep(0.1)


def _continue_lines(out: str) -> list[str]:
    return [line.split("Continue with: ", 1)[1] for line in out.splitlines() if "Continue with: " in line]


# Known race, left open: when one worker's job returns "interrupted" first, joblib may end the pool before the
# other worker has written its checkpoint or the sweep its continue line; under load these two tests failed in 1
# of 3 full-suite runs each (never when run alone). Non-strict: a pass is reported as XPASS, a failure as XFAIL.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_a_parallel_sweeps_own_process_stops_its_jobs(sig, warm_corpus, tmp_path):
    """Not the process group: the jobs in joblib's workers never receive this signal themselves."""
    sweep_dir = tmp_path / "parallel"
    proc = _start_sweep([*warm_corpus, "pe=rope,alibi", "train.steps=100000", "train.ckpt_interval=100000",
                         "train.threads=1", f"hydra.sweep.dir={sweep_dir}"])
    _wait_for(proc, lambda: len([p for p in sweep_dir.glob("*/metrics.jsonl") if p.read_text()]) == 2,
              "training both jobs")
    os.kill(proc.pid, sig)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the jobs were still training 120 s after the signal")
    assert proc.returncode == 130, out
    assert sorted(p.parent.name for p in sweep_dir.glob("*/checkpoint.pt")) == ["pe=alibi", "pe=rope"]
    assert not list(sweep_dir.glob("*/final.json")) and "Traceback" not in out
    assert [line.split()[:3] for line in _continue_lines(out)] == [["ropebench", "sweep", "compare"]]


def test_a_parallel_sweep_stopped_during_an_evaluation_ends_with_its_continue_line(warm_corpus, tmp_path):
    """Ctrl-C (the whole process group) while a job evaluates after training: the sweep still prints how to
    continue, and that command completes the evaluation."""
    sweep_dir = tmp_path / "eval"
    # Evaluation at many lengths with every token scored: long enough to be interrupted in.
    args = [*warm_corpus, "pe=rope,alibi", "train.steps=2", "train.threads=1", "eval.max_tokens=0",
            "eval.multiples=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]", f"hydra.sweep.dir={sweep_dir}"]
    proc = _start_sweep(args)
    _wait_for(proc, lambda: any(sweep_dir.glob("*/eval_length.csv")), "an evaluation")
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in out, out
    again = _continue_lines(out)
    assert len(again) == 1 and again[0].startswith("ropebench sweep compare "), out
    command = [sys.executable, "-m", "ropebench", *shlex.split(again[0])[1:]]
    done = subprocess.run(command, env={**os.environ, "ROPEBENCH_LOCAL_JOBS": "2"}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for job in ("pe=rope", "pe=alibi"):
        with open(sweep_dir / job / "eval_length.csv") as f:
            assert len(f.read().splitlines()) == 1 + 16  # every length, once


def _ctrl_c_after_first_length(monkeypatch) -> None:
    """One Ctrl-C as the second length starts (the first is written), as from a terminal."""
    original = PerplexityProbe.measure

    def measure(self, session, length, rows, meter):
        if length == LENGTHS[1]:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, session, length, rows, meter)

    monkeypatch.setattr(PerplexityProbe, "measure", measure)


def test_an_interrupted_evaluation_after_training_is_completed_by_resume(tiny_overrides, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _ctrl_c_after_first_length(monkeypatch)
    result = invoke("train", *tiny_overrides, "eval.after_train=true", f"hydra.run.dir={run}")
    monkeypatch.undo()
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert _continue_lines(result.stderr) == [f"ropebench resume {run}"]
    weights = (run / "model.safetensors").read_bytes()
    with open(run / "eval_length.csv") as f:
        assert [int(line.split(",")[2]) for line in f.read().splitlines()[1:]] == LENGTHS[:1]
    ok(invoke("resume", run))
    with open(run / "eval_length.csv") as f:
        assert [int(line.split(",")[2]) for line in f.read().splitlines()[1:]] == LENGTHS
    assert (run / "model.safetensors").read_bytes() == weights  # completed, not trained again


def test_a_sequential_sweep_prints_one_continue_line_that_continues_it(tiny_overrides, tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    original = Trainer.train_step

    def train_step(self, step_fn):
        loss = original(self, step_fn)
        if self.step == 3 and self.cfg.seed == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", train_step)
    result = invoke("sweep", "compare", *tiny_overrides, "train.steps=8", "pe=choice(rope)", "seed=0,1",
                    "launcher=sequential", f"hydra.sweep.dir={sweep_dir}")
    monkeypatch.undo()
    assert result.exit_code == 130, result.output
    lines = _continue_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ropebench sweep compare "), result.stderr
    ok(invoke(*shlex.split(lines[0])[1:]))
    assert sorted(p.parent.name for p in sweep_dir.glob("*/final.json")) == ["pe=rope,seed=0", "pe=rope,seed=1"]
    assert json.loads((sweep_dir / "pe=rope,seed=0" / "final.json").read_text())["steps"] == 8
