"""Damaged result files: bad rows are skipped with one warning naming the file and lines; the rest still loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plot_options import passkey_rows, write_passkey
from test_plot_table import LENGTHS, PPL, make_run

from ropebench.errors import UserError
from ropebench.report.results import aggregate, load_results, select
from ropebench.report.table import perplexity_table

# make_run writes a header and two rows per length (non-overlapping and sliding): lines 2-9.
DAMAGE = [
    "garbage line here",  # one cell: the other columns are missing
    "rope,64,2048,nonoverlapping,2048,none,abc,1.0,5,ok",  # non-numeric ppl
    "rope,64,4096,nonoverlapping,4096,none,30.0,3.4,5,ok,surplus",  # one cell too many
    "rope,64,-5,nonoverlapping,5,none,30.0,3.4,5,ok",  # not a length
    "rope,64,8192,nonoverlapping,8192,none,,,5,ok",  # ok without its measurement
    "rope,64,x64,nonoverlapping,64,none,30.0,3.4,5,ok",  # non-numeric length
]


def warnings_in(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    make_run(tmp_path / "alibi", "alibi", 0, PPL[("alibi", 0)])
    bad = make_run(tmp_path / "rope", "rope", 0, PPL[("rope", 0)])
    with open(bad / "eval_length.csv", "a") as f:
        f.write("\n".join(DAMAGE) + "\n")
        f.write("rope,64,1024,nonoverlapping,1024,none,inf,inf,5,ok\n")  # a diverged model: kept, no value
    return tmp_path


def test_bad_rows_skipped_with_one_warning(runs: Path, capsys):
    rows = load_results([runs])
    (warning,) = warnings_in(capsys)
    assert str(runs / "rope" / "eval_length.csv") in warning
    assert "skipped 6 damaged rows (lines 10, 11, 12, 13, 14, 15)" in warning
    rope = [r for r in rows if r["pe"] == "rope"]
    assert sorted({r["eval_len"] for r in rope}) == [*LENGTHS, 1024]
    series = {s.label: s for s in aggregate(select(rows, "nonoverlapping"))}
    assert [series["rope"].points[n].mean for n in LENGTHS] == PPL[("rope", 0)]
    assert series["rope"].points[1024].status == "missing"  # inf: measured, but no value to draw


def test_table_and_plot_go_on(runs: Path, tmp_path: Path, capsys):
    from ropebench.report.plot import plot_length

    table = perplexity_table([runs])
    assert "| rope | 20.00 |" in table and "| alibi | 22.00 |" in table and "2048" not in table
    assert len(warnings_in(capsys)) == 1
    written = plot_length([runs], tmp_path / "out" / "f.png")
    assert written[0].stat().st_size > 1000 and len(warnings_in(capsys)) == 1


@pytest.mark.parametrize("content", ["eval_len,protocol,stride\n64,nonoverlapping,64\n", "", "\xff\xfe\x00garbage"])
def test_file_without_required_column_is_skipped(runs: Path, content: str, capsys):
    broken = runs / "rope" / "eval_length.csv"
    broken.write_bytes(content.encode("latin-1"))
    rows = load_results([runs])
    (warning,) = warnings_in(capsys)
    assert f"skipping '{broken}'" in warning and ("ppl" in warning or not content.startswith("eval_len"))
    assert {r["pe"] for r in rows} == {"alibi"}


def test_only_damaged_files_is_one_user_error(runs: Path, capsys):
    for pe in ("alibi", "rope"):
        (runs / pe / "eval_length.csv").write_text("eval_len\n64\n")
    with pytest.raises(UserError, match="no results for protocol 'nonoverlapping'"):
        perplexity_table([runs])
    assert len(warnings_in(capsys)) == 2  # one per file


def test_cli_table_on_damaged_run(runs: Path):
    from typer.testing import CliRunner

    from ropebench.cli.app import app

    result = CliRunner().invoke(app, ["table", str(runs)])
    assert result.exit_code == 0 and "| rope |" in result.stdout and "Traceback" not in result.output
    assert [ln.split(":")[0] for ln in result.stderr.splitlines()] == ["warning"]


def test_damaged_passkey_rows(tmp_path: Path, capsys):
    from ropebench.report.plot_passkey import load_passkey

    run = write_passkey(tmp_path / "pk", passkey_rows(4))
    with open(run / "passkey.csv", "a") as f:
        f.write("rope,64,256,0.5,none,4,2,half,ok\n")  # non-numeric accuracy
        f.write("rope,64,256\n")  # cut short
        f.write("rope,64,512,0.5,none,4,,,failed: out of memory\n")  # a failure: kept, not measured
    panels = load_passkey([run])
    (warning,) = warnings_in(capsys)
    assert "passkey.csv" in warning and "(lines 6, 7)" in warning
    assert [(r["eval_len"], r["accuracy"]) for r in panels["rope"]][-2:] == [(128, 0.5), (512, None)]
    write_passkey(run, passkey_rows(4), header=[c for c in ("pe", "eval_len", "depth", "status")])
    with pytest.raises(UserError, match="no successful passkey evaluations"):
        load_passkey([run])
    (warning,) = warnings_in(capsys)
    assert "no column accuracy" in warning
