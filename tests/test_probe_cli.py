"""`ropebench probe` end to end: probe.csv through the probe runner (rows, chance, statuses, only-missing resume, an
error at one length kept), bad input refused in one line with nothing written, the heatmaps and the table, and the
sweep that probes its runs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import refused
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.eval import probes

runner = CliRunner()
ARGS = ["--lengths", "64,96", "--depths", "0,1", "--trials", "2", "--candidates", "3", "--task", "niah_single,vt"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tiny_overrides, tmp_path_factory) -> Path:
    """A tiny run evaluated at 64 tokens by default (eval.lengths): its sweep's probes need no --lengths."""
    run_dir = tmp_path_factory.mktemp("runs") / "rope"
    result = invoke("train", *tiny_overrides, "pe=rope", "eval.lengths=[64]", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run: each test writes its own probe.csv."""
    return Path(shutil.copytree(trained, tmp_path / "rope", ignore=shutil.ignore_patterns("*.csv")))


def test_probe_writes_rows_by_task_length_and_depth(run, tmp_path):
    result = invoke("probe", run, *ARGS)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "probe.csv")
    rows = read_csv(run / "probe.csv")
    assert list(rows[0]) == list(probes.COLUMNS)
    assert [(r["task"], r["eval_len"], r["depth"]) for r in rows] == [
        (t, n, d) for t in ("niah_single", "vt") for n in ("64", "96") for d in ("0.0", "1.0")]
    for r in rows:
        assert r["status"] == "ok" and (r["trials"], r["candidates"]) == ("2", "3")
        assert float(r["chance"]) == pytest.approx(1 / 3)
        assert float(r["accuracy"]) == int(r["correct"]) / 2
        assert float(r["exact_accuracy"]) == int(r["exact_correct"]) / 2
        assert float(r["answer_nll"]) > 0
    table = invoke("table", run, "--metric", "probe")
    assert table.exit_code == 0, table.output
    assert "| encoding | task | chance | 64 | 96 |" in table.stdout and "| rope | vt | 0.333 |" in table.stdout
    as_csv = invoke("table", run, "--metric", "probe", "--format", "csv", "--lengths", "96").stdout.split()
    assert as_csv[0] == "encoding,task,chance,96" and [line.split(",")[:3] for line in as_csv[1:]] == [
        ["rope", "niah_single", "0.333"], ["rope", "vt", "0.333"]]
    figure = invoke("plot", run, "--probe", "--out", tmp_path / "probes.png")
    assert figure.exit_code == 0, figure.output
    assert (tmp_path / "probes.png").stat().st_size > 5_000


def test_only_missing_measures_what_is_missing(run):
    quiet = {"log": lambda *a: None, "tasks": ["niah_single"], "depths": [0.5], "trials": 2, "candidates": 3}
    probes.probe_accuracy(run, lengths=[64], **quiet)
    rows = probes.probe_accuracy(run, lengths=[64, 96], only_missing=True, **quiet)
    assert [r["eval_len"] for r in rows] == [96]
    assert probes.probe_accuracy(run, lengths=[64, 96], only_missing=True, **quiet) == []
    assert len(read_csv(run / "probe.csv")) == 2


def test_an_error_at_one_length_keeps_the_others(run, monkeypatch):
    real = probes.rank_answers

    def fail_at_96(session, trials, length, *args):
        if length == 96:
            raise MemoryError()
        return real(session, trials, length, *args)

    monkeypatch.setattr(probes, "rank_answers", fail_at_96)
    result = invoke("probe", run, *ARGS)
    assert result.exit_code == 1 and "Traceback" not in result.output
    statuses = {(r["task"], r["eval_len"]): r["status"] for r in read_csv(run / "probe.csv")}
    assert statuses[("vt", "96")] == "error: MemoryError" and statuses[("vt", "64")] == "ok"


def test_learned_positions_past_their_table_are_not_applicable(tiny_overrides, tmp_path):
    run = tmp_path / "learned"
    result = invoke("train", *tiny_overrides, "pe=learned", "train.seq_len=64", "train.steps=2",
                    f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    rows = probes.probe_accuracy(run, ["niah_single"], [64, 96], [0.5], trials=1, candidates=2, log=lambda *a: None)
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("not_applicable")
    assert rows[1]["chance"] == 0.5  # stated even where nothing was measured


@pytest.mark.parametrize("bad, message", [
    (["--task", "niah_single,needle"], "unknown probe task 'needle'; choose one of: niah_multikey"),
    (["--depths", "0,1.5"], "probe depth 1.5 is outside [0, 1]"),
    (["--depths", "-0.1"], "probe depth -0.1 is outside [0, 1]"),
    (["--candidates", "1"], "probe candidates K must be between 2"),
    (["--trials", "0"], "probe trials must be a positive integer, got 0"),
    (["--lengths", "49", "--task", "vt"], "probe length 49 is too short for vt"),
    (["--lengths", "16"], "probe length 16 is too short for niah_single"),
])
def test_bad_input_is_one_line_and_writes_nothing(run, bad, message):
    refused(invoke("probe", run, *bad), message)
    assert not (run / "probe.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--probe-task", "vt"], "--probe-task applies to --probe only"),
    (["--probe", "--probe-task", "needle"], "unknown probe task 'needle'"),
    (["--probe", "--passkey"], "--probe and --passkey are two figures"),
])
def test_plot_options_are_checked(run, tmp_path, args, message):
    refused(invoke("plot", run, *args, "--out", tmp_path / "x.png"), message)


def test_a_sweep_asked_for_probes_probes_its_finished_runs(run, tmp_path):
    from ropebench.report.sweep import finish_sweep

    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "pe=rope")
    report = finish_sweep(sweep, "probes", log=lambda *a: None, probes=True)
    rows = read_csv(sweep / "pe=rope" / "probe.csv")
    cells = {(t, d) for t in probes.DEFAULT_TASKS for d in probes.DEFAULT_DEPTHS}
    assert {(r["task"], float(r["depth"])) for r in rows} == cells and {r["eval_len"] for r in rows} == {"64"}
    assert all(r["status"] == "ok" and r["trials"] == str(probes.DEFAULT_TRIALS) for r in rows)
    assert sweep / "probes_probes.png" in report.figure


def test_the_probes_sweep_is_compare_with_probes():
    result = invoke("train", "sweep=probes", "--cfg", "job")
    assert result.exit_code == 0, result.output
    assert "sweep_name: probes" in result.stdout and "probes: true" in result.stdout
    compare, ours = (yaml.safe_load(invoke("train", f"sweep={name}", "--cfg", "hydra").stdout)["hydra"]
                     for name in ("compare", "probes"))
    assert ours["sweeper"]["params"] == compare["sweeper"]["params"] == {"pe": "${ropebench_core_encodings:}"}
    assert ours["launcher"] == compare["launcher"]
