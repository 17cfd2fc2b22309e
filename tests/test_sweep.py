"""Sweeps through real Hydra multirun: every job runs, a failing job does not stop the others, the sweep ends
with a summary, a non-zero exit when something failed, and a relaunch skips what already finished."""

import json

from typer.testing import CliRunner

from ropebench.cli.app import app

runner = CliRunner()


def test_sweep_with_a_failing_job_keeps_the_others(tiny_overrides, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # A training length past the (tiny) training data passes every config check and fails only inside the job.
    args = ["sweep", "compare", *tiny_overrides, "train.steps=2", "pe=rope,alibi", "train.seq_len=16,1000000",
            f"hydra.sweep.dir={sweep_dir}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert runs == sorted(["pe=alibi,train.seq_len=16", "pe=alibi,train.seq_len=1000000", "pe=rope,train.seq_len=16",
                    "pe=rope,train.seq_len=1000000"])
    for name in ("pe=alibi,train.seq_len=16", "pe=rope,train.seq_len=16"):
        assert (sweep_dir / name / "final.json").is_file()
        assert (sweep_dir / name / "eval_length.csv").is_file()  # evaluated after training
    assert "longer than the training data" in (sweep_dir / "pe=rope,train.seq_len=1000000" / "error.txt").read_text()
    assert "2 finished, 2 failed" in result.output
    assert (sweep_dir / "compare.png").is_file() and (sweep_dir / "table.md").is_file()

    # Relaunch the same sweep: finished runs are skipped, not retrained; the failed ones fail again.
    before = (sweep_dir / "pe=rope,train.seq_len=16" / "final.json").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert again.output.count("already finished") == 2
    assert (sweep_dir / "pe=rope,train.seq_len=16" / "final.json").read_text() == before
    assert json.loads(before)["status"] == "finished"


def test_sweep_rejects_a_key_that_does_not_exist(tiny_overrides, tmp_path):
    result = runner.invoke(app, ["sweep", "compare", *tiny_overrides, "train.stepz=1,2",
                                 f"hydra.sweep.dir={tmp_path / 's'}"])
    assert result.exit_code == 2
    assert "unknown config key 'train.stepz'" in result.stderr
    assert not (tmp_path / "s").exists()  # nothing started
