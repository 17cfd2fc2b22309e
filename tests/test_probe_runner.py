"""The probe runner that perplexity and passkey share: concurrent merges keep every row, damaged result files
never lose new rows, an error at one length keeps the others, a relaunch completes only what is missing, and
bad lengths are refused in one line."""

from __future__ import annotations

import csv
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.eval import passkey as pk
from ropebench.eval import perplexity as ppl
from ropebench.eval.runner import Session, error_status, run_probe

runner = CliRunner()


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def by_length(rows) -> dict[int, dict]:
    return {int(r["eval_len"]): r for r in rows}


@pytest.fixture(scope="module")
def trained(tiny_overrides, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "rope"
    result = runner.invoke(app, ["train", *tiny_overrides, "pe=rope", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run: each test writes its own result files."""
    copy = tmp_path / "rope"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("*.csv"))
    return copy


# ---- two processes merging into one eval_length.csv ----

class _StubPE:
    supports_rope_scaling = False
    trained_scaling = None  # what an encoding declares (PositionEncoding): the runner reads it

    def max_len(self):
        return None


class _StubModel(torch.nn.Module):
    rope_dropped = False  # what a model declares (GPT, HFCausalLM): the runner reads it

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.pe = _StubPE()

    def max_len(self):
        return self.pe.max_len()


class _CountingProbe(ppl.PerplexityProbe):
    """The perplexity table without a corpus: each length's 'perplexity' is the length itself."""

    def prepare(self, session):
        return None

    def unavailable(self, session, length):
        return None

    def measure(self, session, length, rows, meter):
        rows[0].update(ppl=float(length), nll=0.0, n_tokens=length, status="ok")
        return []


def _evaluate_in_another_process(run_dir: str, lengths: list[int], start) -> None:
    session = Session(run_dir, log=lambda *a, **k: None)
    session.load_model(model=_StubModel())
    start.wait()  # both processes begin merging at the same moment
    run_probe(_CountingProbe(), session, lengths)


def test_two_processes_merging_into_one_file_keep_every_row(tmp_path):
    config = {"model": {"n_layer": 1}, "pe": {"name": "stub"}, "data": {"source": "stdlib"},
              "train": {"seq_len": 16}, "eval": {"max_tokens": 0}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no fork of a process holding torch
    start = ctx.Barrier(2)
    jobs = [ctx.Process(target=_evaluate_in_another_process, args=(str(tmp_path), list(range(i, 120, 2)), start))
            for i in (1, 2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=240)
    assert [job.exitcode for job in jobs] == [0, 0]
    rows = read_csv(tmp_path / "eval_length.csv")
    assert sorted(int(r["eval_len"]) for r in rows) == list(range(1, 120))  # 60 merges each, none lost
    assert all(float(r["ppl"]) == int(r["eval_len"]) for r in rows)


# ---- damaged result files ----

def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


def test_damaged_eval_csv_keeps_the_new_rows_and_warns_once(run):
    path = run / "eval_length.csv"
    header = ",".join(ppl.COLUMNS)
    cells = {"pe": "rope", "train_seq_len": 16, "eval_len": 40, "split": "test", "protocol": "nonoverlapping",
             "stride": 40, "rope_scaling": "none", "logit_scale": "none", "ppl": 9.5, "nll": 2.25, "n_tokens": 512,
             "n_windows": 13, "n_documents": 2, "status": "ok"}
    old = ",".join(str(cells.get(c, "")) for c in ppl.COLUMNS)
    path.write_text(f"{header}\n{old}\nthis row is garbage\n")  # line 3: the wrong number of fields
    result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16,32"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and str(path) in warnings[0] and "line 3" in warnings[0]
    rows = by_length(read_csv(path))
    assert sorted(rows) == [16, 32, 40] and rows[40]["ppl"] == "9.5"  # the good old row is kept
    assert rows[16]["status"] == rows[32]["status"] == "ok"


def test_eval_csv_without_a_key_column_is_replaced_by_the_new_rows(run):
    path = run / "eval_length.csv"
    path.write_text("pe,eval_len,ppl\nrope,16,3.0\n")  # no protocol, stride, rope_scaling
    result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16"])
    assert result.exit_code == 0, result.output
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and str(path) in warnings[0] and "no column protocol" in warnings[0]
    rows = read_csv(path)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["protocol"] == "nonoverlapping"


def test_a_text_cell_in_a_key_column_sorts_last_instead_of_crashing(run):
    path = run / "eval_length.csv"
    cells = {"pe": "rope", "train_seq_len": 16, "eval_len": "abc", "split": "test", "protocol": "nonoverlapping",
             "stride": 8, "rope_scaling": "none", "logit_scale": "none", "ppl": 1, "nll": 0, "n_tokens": 1,
             "n_windows": 1, "n_documents": 1, "status": "ok"}
    path.write_text(",".join(ppl.COLUMNS) + "\n" + ",".join(str(cells.get(c, "")) for c in ppl.COLUMNS) + "\n")
    result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert [r["eval_len"] for r in read_csv(path)] == ["16", "abc"]


def test_damaged_passkey_csv_keeps_the_new_rows_and_warns_once(run):
    path = run / "passkey.csv"
    path.write_text(",".join(pk.COLUMNS) + "\nrope,16,96,0.5,none,,,none,2,1,0.5,ok\nrope,16,garbage\n")
    result = runner.invoke(app, ["passkey", str(run), "--lengths", "48", "--depths", "0,1", "--trials", "2"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and str(path) in warnings[0] and "line 3" in warnings[0]
    rows = read_csv(path)
    assert [(r["eval_len"], r["depth"]) for r in rows] == [("48", "0.0"), ("48", "1.0"), ("96", "0.5")]
    assert all(r["status"] == "ok" for r in rows)


# ---- an error at one length ----

def test_error_status_with_and_without_a_message():
    assert error_status(MemoryError()) == "error: MemoryError"
    assert error_status(RuntimeError("CUDA out of memory.\nTried to allocate")) == \
        "error: RuntimeError: CUDA out of memory."


def test_memory_error_at_one_length_keeps_the_others(run, monkeypatch):
    real = ppl.score_windows

    def fail_at_20(model, tokens, windows, length, *args, **kwargs):
        if length == 20:
            raise MemoryError()  # Python's own: no message at all
        return real(model, tokens, windows, length, *args, **kwargs)

    monkeypatch.setattr(ppl, "score_windows", fail_at_20)
    result = runner.invoke(app, ["eval-length", str(run), "--lengths", "16,20,24"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    rows = by_length(read_csv(run / "eval_length.csv"))
    assert rows[20]["status"] == "error: MemoryError" and rows[20]["ppl"] == ""
    assert rows[16]["status"] == rows[24]["status"] == "ok" and float(rows[24]["ppl"]) > 1


def test_an_error_restores_the_unscaled_encoding(run, monkeypatch):
    session = Session(run)
    session.load_model("cpu")
    model = session.model
    x = torch.arange(40).remainder(200).unsqueeze(0)
    before, _ = model(x)

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pk, "count_correct", fail)
    rows = pk.passkey_accuracy(run, [48, 96], [0.5], trials=1, rope_scaling={"rope_type": "linear"}, model=model,
                               log=lambda *a: None)
    assert [r["status"] for r in rows] == ["error: RuntimeError: out of memory"] * 2
    assert model.pe.scaling is None
    after, _ = model(x)
    assert torch.equal(before, after)


# ---- a relaunch completes only what is missing ----

def _out_of_memory(*args, **kwargs):
    raise MemoryError()


def test_missing_lengths_after_a_partial_evaluation(run, monkeypatch):
    quiet = {"log": lambda *a: None}
    ppl.eval_length(run, [16, 32], **quiet)
    assert ppl.missing_lengths(run, [16, 24, 32, 48]) == [24, 48]
    assert ppl.missing_lengths(run, [16], protocol="sliding") == [16]  # another protocol is another result
    rows = ppl.eval_length(run, [16, 24, 32, 48], only_missing=True, **quiet)
    assert [r["eval_len"] for r in rows] == [24, 48]
    assert ppl.missing_lengths(run, [16, 24, 32, 48]) == []
    assert sorted(by_length(read_csv(run / "eval_length.csv"))) == [16, 24, 32, 48]
    # A recorded error is retried by a relaunch; a scaled evaluation is not an unscaled result.
    monkeypatch.setattr(ppl, "score_windows", _out_of_memory)
    ppl.eval_length(run, [64], **quiet)
    assert ppl.missing_lengths(run, [16, 64]) == [64]
    monkeypatch.undo()
    assert ppl.eval_length(run, [64], rope_scaling={"rope_type": "linear"}, only_missing=True, **quiet)
    assert ppl.missing_lengths(run, [64]) == [64]
    assert ppl.eval_length(run, [16, 64], only_missing=True, **quiet)[0]["status"] == "ok"
    assert ppl.missing_lengths(run, [16, 64]) == []
    (run / "model.safetensors").write_bytes(b"damaged")  # nothing missing: the model is not even loaded
    assert ppl.eval_length(run, [16, 64], only_missing=True, **quiet) == []


def test_missing_passkey_cells_after_a_partial_evaluation(run):
    quiet = {"log": lambda *a: None, "trials": 1}
    pk.passkey_accuracy(run, [48], [0.0], **quiet)
    assert pk.missing_passkey_cells(run, [48, 64], [0.0, 1.0]) == [(48, 1.0), (64, 0.0), (64, 1.0)]
    rows = pk.passkey_accuracy(run, [48, 64], [0.0, 1.0], only_missing=True, **quiet)
    assert [(r["eval_len"], r["depth"]) for r in rows] == [(48, 1.0), (64, 0.0), (64, 1.0)]
    assert pk.missing_passkey_cells(run, [48, 64], [0.0, 1.0]) == []
    assert len(read_csv(run / "passkey.csv")) == 4


# ---- bad lengths ----

@pytest.mark.parametrize("command", [["eval-length"], ["passkey"]])
def test_superscript_lengths_are_refused_in_one_line(run, command):
    result = runner.invoke(app, [*command, str(run), "--lengths", "16,²"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == "error: evaluation length '²' is not a positive integer; " \
                                    "use e.g. --lengths 64,128,256"
    assert not list(run.glob("*.csv"))
