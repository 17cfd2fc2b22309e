"""Progress in a log: when the output is not a terminal, a plain line every few seconds (done, rate, ETA, loss)
for training and evaluation; `--progress never` prints none; in a sweep every line names its run."""

import io
import os
import re

from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.progress import ProgressLines, _Console, job, per_second


def test_progress_lines_say_how_far_how_fast_and_when_done():
    out = io.StringIO()
    with ProgressLines(0.0, _Console(file=out, width=200)) as bar:
        task = bar.add_task("train rope", total=10, completed=2, rate="", info="")
        bar.update(task, completed=6, rate="1.2k tok/s", info="loss 3.210")
        with job("pe=rope,seed=0"):
            other = bar.add_task("eval L=64", total=None, rate="", info="none")
            bar.update(other, total=4)
            bar.advance(other, 2)
        bar.remove_task(other)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"train rope: 6/10 \(60%\) 1\.2k tok/s elapsed 0:00:00 ETA 0:00:00 loss 3\.210", lines[0])
    # In a sweep job, its name first; a rate of its own when the caller gives none.
    assert lines[1] == "[pe=rope,seed=0] eval L=64: 0/4 (0%) elapsed 0:00:00 none"
    assert re.fullmatch(r"\[pe=rope,seed=0\] eval L=64: 2/4 \(50%\) \S+/s elapsed 0:00:00 ETA 0:00:00 none", lines[2])
    assert len(lines) == 4 and lines[3].startswith("train rope: 6/10 (60%)")  # a task still open: its last state
    assert per_second(64.4, "tok") == "64 tok/s" and per_second(1234, "tok") == "1.2k tok/s"
    assert per_second(0.5, "tok") == "0.5 tok/s"


def _train(tmp_path, tiny_overrides, monkeypatch, *options):
    """A tiny run trained and evaluated through the CLI; its stderr lines. The output is captured, so it is not a
    terminal (as in a log). The options set environment variables, restored afterwards."""
    for name in ("ROPEBENCH_PROGRESS", "ROPEBENCH_PROGRESS_INTERVAL"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    result = CliRunner().invoke(app, [*options, "train", *tiny_overrides, "eval.after_train=true",
                                      "eval.multiples=[1,2]", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    return result.stderr.splitlines()


def test_a_log_gets_progress_lines_for_training_and_evaluation(tmp_path, tiny_overrides, monkeypatch):
    lines = _train(tmp_path, tiny_overrides, monkeypatch, "--progress-interval", "0")
    training = [ln for ln in lines if ln.startswith("train rope: ")]
    assert len(training) >= 3 and all("ETA" in ln and "elapsed" in ln for ln in training)
    assert any(re.search(r"tok/s .*loss \d", ln) for ln in training) and training[-1].startswith("train rope: 6/6")
    evaluation = [ln for ln in lines if ln.startswith("eval L=")]
    done = [ln for ln in evaluation if not re.search(r": 0/", ln)]  # 0/N: the length starts (no rate yet)
    assert done and all(re.search(r": \d+/\d+ \(\d+%\) \S+/s elapsed", ln) for ln in done)


def test_progress_never_prints_no_progress(tmp_path, tiny_overrides, monkeypatch):
    lines = _train(tmp_path, tiny_overrides, monkeypatch, "--progress", "never")
    assert not [ln for ln in lines if ln.startswith(("train rope", "eval L="))]
    assert any("ppl" in ln for ln in lines)  # the results still are
    assert os.environ["ROPEBENCH_PROGRESS"] == "never"  # what jobs in worker processes read


def test_a_bad_progress_option_is_one_line(tmp_path):
    from tests.helpers import refused

    refused(CliRunner().invoke(app, ["--progress", "sometimes", "table", str(tmp_path)]),
            "unknown --progress 'sometimes'; choose one of: always, auto, never")


def test_every_line_of_a_sweep_job_names_its_run(tiny_overrides, tmp_path):
    result = CliRunner().invoke(app, ["sweep", "compare", *tiny_overrides, "train.steps=2", "pe=rope,alibi",
                                      "eval.multiples=[1,2]", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert result.exit_code == 0, result.output
    job_lines = [ln for ln in result.stderr.splitlines() if re.search(r"ppl \d|training pe=|train (rope|alibi)", ln)]
    assert len(job_lines) >= 6
    for line in job_lines:
        assert line.startswith(("[pe=rope] ", "[pe=alibi] ")), line
    assert all(("rope" in ln) == ln.startswith("[pe=rope]") for ln in job_lines if "training pe=" in ln)
