"""End to end through the real CLI: train a tiny model for a few steps, evaluate it, plot it, tabulate it."""

import csv
import json
import math
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from ropebench.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def rope_run(tiny_overrides, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "rope"
    result = invoke("train", *tiny_overrides, "pe=rope", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    assert str(run_dir) in result.stdout.splitlines()[-1]  # the run directory is printed at the end
    return run_dir


def test_train_writes_the_run_directory_contract(rope_run):
    config = (rope_run / "config.yaml").read_text()
    assert "${" not in config and "name: rope" in config  # resolved
    assert not (rope_run / ".hydra").exists()  # Hydra writes nothing into the record
    records = [json.loads(line) for line in (rope_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all({"step", "train_loss", "tokens_per_s"} <= r.keys() for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [6]  # eval_interval=3 with log_interval=2: 6
    final = json.loads((rope_run / "final.json").read_text())
    assert final["status"] == "finished" and final["steps"] == 6
    state = torch.load(rope_run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and "optimizer" in state
    assert (rope_run / "model.safetensors").stat().st_size > 0


def test_eval_length_writes_one_row_per_length(rope_run):
    result = invoke("eval-length", rope_run)
    assert result.exit_code == 0, result.output
    with open(rope_run / "eval_length.csv") as f:
        rows = list(csv.DictReader(f))
    expected_cols = {"pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling", "ppl", "nll",
                     "n_tokens", "status"}
    assert expected_cols <= rows[0].keys()
    assert [int(r["eval_len"]) for r in rows] == [16, 20, 24, 32, 64, 128, 256]
    for r in rows:
        assert r["status"] == "ok" and int(r["n_tokens"]) > 0
        assert float(r["ppl"]) == pytest.approx(math.exp(float(r["nll"])))
        assert 1 < float(r["ppl"]) < 257 * 2  # a trained byte model is better than chance, give or take
    # Re-running one length with another protocol merges: the nonoverlapping rows stay.
    assert invoke("eval-length", rope_run, "--lengths", "32", "--protocol", "sliding", "--stride", "8").exit_code == 0
    with open(rope_run / "eval_length.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and sum(r["protocol"] == "sliding" for r in rows) == 1
    assert (rope_run / "eval_positions.csv").is_file()


def test_learned_positions_are_recorded_not_applicable(tiny_overrides, tmp_path):
    run_dir = tmp_path / "learned"
    assert invoke("train", *tiny_overrides, "pe=learned", "train.steps=2", f"hydra.run.dir={run_dir}").exit_code == 0
    assert invoke("eval-length", run_dir, "--lengths", "16,32").exit_code == 0
    with open(run_dir / "eval_length.csv") as f:
        rows = {int(r["eval_len"]): r for r in csv.DictReader(f)}
    assert rows[16]["status"] == "ok"
    assert rows[32]["status"].startswith("not_applicable") and rows[32]["ppl"] == ""


def test_plot_and_table(rope_run, tmp_path):
    result = invoke("plot", rope_run, "--out", tmp_path / "fig.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fig.png").stat().st_size > 10_000 and (tmp_path / "fig.pdf").stat().st_size > 1_000
    result = invoke("plot", rope_run, "--by-position", "--out", tmp_path / "pos.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pos.png").is_file()
    table = invoke("table", rope_run)
    assert table.exit_code == 0 and "| rope |" in table.stdout


def test_rope_scaling_rows_land_under_their_own_label(rope_run):
    result = invoke("eval-length", rope_run, "--lengths", "32,64", "--rope-scaling", "yarn")
    assert result.exit_code == 0, result.output
    with open(rope_run / "eval_length.csv") as f:
        yarn = [r for r in csv.DictReader(f) if r["rope_scaling"] == "yarn"]
    assert [(int(r["eval_len"]), float(r["rope_factor"])) for r in yarn] == [(32, 2.0), (64, 4.0)]


def test_console_script_help_runs_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "ropebench", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in ("train", "eval-length", "plot", "sweep", "table", "passkey", "bench"):
        assert command in out.stdout
