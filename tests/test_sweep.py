"""Sweeps through real Hydra multirun: every job runs, a failing job does not stop the others, the sweep ends
with a summary, a non-zero exit when something failed, and a relaunch skips what already finished."""

import json

from typer.testing import CliRunner

from ropebench.cli import app

runner = CliRunner()


def test_sweep_with_a_failing_job_keeps_the_others(tiny_overrides, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["sweep", "compare", *tiny_overrides, "train.steps=2", "pe=rope,alibi", "model.n_head=2,3",
            f"hydra.sweep.dir={sweep_dir}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # n_head=3 cannot divide n_embd=32
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert runs == ["model.n_head=2,pe=alibi", "model.n_head=2,pe=rope", "model.n_head=3,pe=alibi",
                    "model.n_head=3,pe=rope"]
    for name in ("model.n_head=2,pe=alibi", "model.n_head=2,pe=rope"):
        assert (sweep_dir / name / "final.json").is_file()
        assert (sweep_dir / name / "eval_length.csv").is_file()  # evaluated after training
    assert "n_head=3 must divide" in (sweep_dir / "model.n_head=3,pe=rope" / "error.txt").read_text()
    assert "2 finished, 2 failed" in result.output
    assert (sweep_dir / "compare.png").is_file() and (sweep_dir / "table.md").is_file()

    # Relaunch the same sweep: finished runs are skipped, not retrained; the failed ones fail again.
    before = (sweep_dir / "model.n_head=2,pe=rope" / "final.json").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.output.count("already finished") == 2
    assert (sweep_dir / "model.n_head=2,pe=rope" / "final.json").read_text() == before
    assert json.loads(before)["status"] == "finished"


def test_sweep_rejects_a_key_that_does_not_exist(tiny_overrides, tmp_path):
    result = runner.invoke(app, ["sweep", "compare", *tiny_overrides, "train.stepz=1,2",
                                 f"hydra.sweep.dir={tmp_path / 's'}"])
    assert result.exit_code == 2
    assert "unknown config key 'train.stepz'" in result.stderr
    assert not (tmp_path / "s").exists()  # nothing started
