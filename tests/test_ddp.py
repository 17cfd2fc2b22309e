"""DDP through torchrun on the CPU (gloo): two ranks with a global batch of 4 reach the same losses as one
process with a batch of 4; only rank 0 writes; a batch the world size does not divide is refused in one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ropebench.cli.app import app

pytestmark = [pytest.mark.slow]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    if TORCHRUN is None:
        pytest.skip("torchrun is not installed next to this Python")
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two ranks on a small machine: one thread each
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "ropebench", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_ranks_match_one_process_of_the_same_global_batch(tiny_overrides, tmp_path):
    args = [*tiny_overrides, "train.batch_size=4", "eval.after_train=false"]
    single = CliRunner().invoke(app, ["train", *args, f"hydra.run.dir={tmp_path / 'single'}"])
    assert single.exit_code == 0, single.output

    ddp = torchrun([*args, f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr

    one = json.loads((tmp_path / "single" / "final.json").read_text())
    two = json.loads((tmp_path / "ddp" / "final.json").read_text())
    assert two.get("world_size") == 2  # really ran as two ranks, not twice as one
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    # Rank 0 alone wrote the metrics: one line per logged step, the same steps as the single process.
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    single_lines = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [r["step"] for r in single_lines]
    for a, b in zip(lines, single_lines):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)


def test_world_size_that_does_not_divide_the_batch_is_refused(tiny_overrides, tmp_path):
    result = torchrun([*tiny_overrides, "train.batch_size=3", f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path,
                      timeout=120)
    assert result.returncode != 0
    assert "train.batch_size=3 is not divisible by the world size 2" in result.stderr
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_submitit_tasks_become_ddp_ranks(tiny_overrides, tmp_path):
    """launcher=slurm/submitit_local with tasks_per_node=2: each sweep job trains as one 2-rank DDP run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    sweep_dir = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", "compare", *tiny_overrides, "train.batch_size=4", "pe=rope,alibi",
                                      "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                                      "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep_dir}"])
    assert result.exit_code == 0, result.output
    for pe in ("rope", "alibi"):
        assert json.loads((sweep_dir / f"pe={pe}" / "final.json").read_text())["world_size"] == 2
