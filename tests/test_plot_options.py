"""What a user controls on a figure: file format by suffix, size, title, style, one DPI; bad values fail in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_bad_input import fails_cleanly
from test_plot_table import PPL, make_run

from ropebench.errors import UserError
from ropebench.report.plot import (
    DPI,
    FigureOptions,
    _pyplot,
    check_style,
    length_figure,
    output_paths,
    parse_figsize,
    plot_length,
    render,
)

PASSKEY_COLUMNS = ["pe", "train_seq_len", "eval_len", "depth", "rope_scaling", "trials", "correct", "accuracy",
                   "status"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    _pyplot().close("all")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs" / "rope", "rope", 0, PPL[("rope", 0)], positions=True)


def write_passkey(run: Path, rows: list[dict], header=PASSKEY_COLUMNS) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "passkey.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"pe": "rope", "train_seq_len": 64, "rope_scaling": "none", "status": "ok", **r} for r in rows)
    return run


def passkey_rows(trials: int, acc: float = 0.5) -> list[dict]:
    return [{"eval_len": n, "depth": d, "trials": trials, "correct": round(acc * trials), "accuracy": acc}
            for n in (64, 128) for d in (0.0, 1.0)]


@pytest.mark.parametrize("out, names", [
    ("fig.png", ["fig.png", "fig.pdf"]),
    ("fig.pdf", ["fig.pdf"]),
    ("fig.SVG", ["fig.svg"]),
    ("figs", ["figs/stem.png", "figs/stem.pdf"]),
])
def test_output_paths_follow_the_suffix(tmp_path: Path, out: str, names: list[str]):
    assert output_paths(tmp_path / out, "stem") == [tmp_path / n for n in names]


def test_output_paths_refuse_other_formats_and_unwritable_places(tmp_path: Path):
    with pytest.raises(UserError, match=r"'\.jpg'.*\.png.*\.pdf or \.svg"):
        output_paths(tmp_path / "fig.jpg", "stem")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create output directory"):
        output_paths(tmp_path / "file" / "fig.png", "stem")


def test_formats_written_and_dpi(run: Path, tmp_path: Path):
    from PIL import Image

    svg = plot_length([run], tmp_path / "a.svg")
    assert svg == [tmp_path / "a.svg"] and svg[0].read_text().lstrip().startswith("<?xml")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "a.pdf").exists()
    pdf = plot_length([run], tmp_path / "b.pdf")
    assert pdf == [tmp_path / "b.pdf"] and pdf[0].read_bytes()[:5] == b"%PDF-"
    png = plot_length([run], tmp_path / "c.png")
    assert Image.open(png[0]).info["dpi"] == pytest.approx((DPI, DPI), abs=0.1)
    assert [p.name for p in png] == ["c.png", "c.pdf"] and not list(tmp_path.glob(".*tmp"))
    assert not _pyplot().get_fignums()  # saved figures are closed


def test_size_title_and_style(run: Path, tmp_path: Path):
    fig = length_figure([run], opts=FigureOptions(figsize=(5.0, 3.0), title="Mine"))
    assert tuple(fig.get_size_inches()) == (5.0, 3.0) and fig.axes[0].get_title() == "Mine"
    assert length_figure([run], opts=FigureOptions(title="")).axes[0].get_title() == ""
    assert "Train short, test long" in length_figure([run]).axes[0].get_title()
    seen = {}

    def build():  # the style is in force while the figure is built (and saved)
        seen["face"] = _pyplot().rcParams["axes.facecolor"]
        return length_figure([run])

    render(build, tmp_path / "s.png", "x", FigureOptions(style="ggplot"))
    assert seen["face"] == "#E5E5E5" and _pyplot().rcParams["axes.facecolor"] == "white"


def test_parse_figsize_and_style():
    assert parse_figsize("7,4.2") == (7.0, 4.2)
    for bad in ("abc", "7", "7,0", "7,-1", "1,2,3", "nan,4", "500,4"):
        with pytest.raises(UserError, match=f"figsize '{bad}'"):
            parse_figsize(bad)
    assert check_style("ggplot") == "ggplot" and check_style("default") == "default"
    with pytest.raises(UserError, match="unknown matplotlib style 'nope'; choose one of: .*ggplot"):
        check_style("nope")


def test_passkey_heatmap_colour_map_and_trials(tmp_path: Path):
    from ropebench.report.plot_passkey import passkey_figure

    for seed in (0, 1):  # two seeds of one configuration: trials add up per cell
        write_passkey(tmp_path / f"s{seed}", passkey_rows(4, acc=0.25 * (seed + 1)))
    fig = passkey_figure([tmp_path], opts=FigureOptions(title="PK"))
    ax = fig.axes[0]
    assert ax.images[0].get_cmap().name == "viridis"
    assert "(8 trials per cell)" in ax.get_title() and fig.get_suptitle() == "PK"
    assert "fraction of trials" in fig.axes[-1].get_ylabel()  # the colour bar
    assert [t.get_text() for t in ax.texts][:1] == ["0.38"]  # mean of 0.25 and 0.5


@pytest.mark.parametrize("args, expected", [
    (["--figsize", "abc"], "figsize 'abc'"),
    (["--style", "nope"], "matplotlib style 'nope'"),
    (["--out", "{tmp}/fig.jpg"], "'.jpg'"),
    (["--out", "{tmp}/file/fig.png"], "cannot create output directory"),
    (["--length", "128"], "--by-position only"),
    (["--by-position", "--smooth", "0"], "smooth '0'"),
    (["--by-position", "--length", "100"], "length 100; evaluated: 128, 512"),
])
def test_cli_bad_plot_options_fail_in_one_line(run: Path, tmp_path: Path, args: list[str], expected: str):
    (tmp_path / "file").write_text("x")
    fails_cleanly(["plot", run, *(a.format(tmp=tmp_path) for a in args)], expected)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))


def test_cli_plot_options(run: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from ropebench.cli.app import app

    out = tmp_path / "f.svg"
    args = ["plot", str(run), "--out", str(out), "--figsize", "5,3", "--title", "T", "--style", "ggplot"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file() and not (tmp_path / "f.pdf").exists()
    args = ["plot", str(run), "--by-position", "--length", "128", "--smooth", "2", "--out", str(tmp_path / "p.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").is_file() and (tmp_path / "p.pdf").is_file()
