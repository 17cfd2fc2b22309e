"""Results loading, tables and figures, on fake-but-realistic run directories (no training, no torch)."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ropebench.errors import UserError
from ropebench.report.plot import PALETTE, length_figure, plot_length
from ropebench.report.positions import plot_positions
from ropebench.report.results import aggregate, find_runs, load_results, select
from ropebench.report.table import perplexity_table, write_table

TRAIN = 64
LENGTHS = [64, 128, 256, 512]
COLUMNS = ["pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling", "ppl", "nll", "n_tokens", "status"]
# The perplexities the fake runs "measured"; the tests recompute means and stds from these.
PPL = {
    ("rope", 0): [20.0, 35.5, 90.25, 300.0],
    ("rope", 1): [21.0, 36.5, 99.75, 260.0],
    ("alibi", 0): [22.0, 21.0, 20.5, 20.25],
    ("learned", 0): [19.0],  # learned positions stop at max_len = the training length
}
YARN = [20.0, 24.0, 30.0, 41.0]


def make_run(
    run: Path,
    pe: str,
    seed: int,
    ppls: list[float],
    *,
    seq_len: int = TRAIN,
    base: float = 10000.0,
    yarn: list[float] | None = None,
    positions: bool = False,
) -> Path:
    pe_cfg = {"name": pe, "base": base} if pe == "rope" else {"name": pe}
    cfg = {
        "model": {"name": "tiny", "n_layer": 2},
        "pe": pe_cfg,
        "train": {"seq_len": seq_len, "steps": 10, "device": "cpu"},
        "seed": seed,
        "sweep_name": "compare",
        "logger": {"wandb": {"mode": "disabled", "group": f"g{seed}"}},
    }
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
    rows = []
    for i, n in enumerate(LENGTHS):
        base_row = {
            "pe": pe,
            "train_seq_len": seq_len,
            "eval_len": n,
            "protocol": "nonoverlapping",
            "stride": n,
            "rope_scaling": "none",
            "n_tokens": 4096,
        }
        if i < len(ppls):
            rows.append({**base_row, "ppl": ppls[i], "nll": math.log(ppls[i]), "status": "ok"})
        else:
            rows.append(
                {
                    **base_row,
                    "ppl": "",
                    "nll": "",
                    "n_tokens": 0,
                    "status": f"not_applicable: learned positions stop at max_len={seq_len}",
                }
            )
        if yarn:
            rows.append({**base_row, "rope_scaling": "yarn", "ppl": yarn[i], "nll": math.log(yarn[i]), "status": "ok"})
        # A sliding-window row that must not leak into the non-overlapping results.
        rows.append({**base_row, "protocol": "sliding", "stride": 32, "ppl": 1.0, "nll": 0.0, "status": "ok"})
    with open(run / "eval_length.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if positions:
        with open(run / "eval_positions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                [
                    "eval_len",
                    "protocol",
                    "stride",
                    "rope_scaling",
                    "position_start",
                    "position_end",
                    "mean_nll",
                    "n_tokens",
                ]
            )
            for n in (128, 512):
                for start in range(0, n, 64):
                    writer.writerow([n, "nonoverlapping", n, "none", start, start + 64, 3.0 + start / n, 512])
    return run


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    from ropebench.report.plot import _pyplot

    _pyplot().close("all")  # figures built but not saved stay open in pyplot otherwise


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweeps" / "compare" / "20261123-130000"
    for (pe, seed), ppls in PPL.items():
        make_run(
            root / f"pe={pe},seed={seed}",
            pe,
            seed,
            ppls,
            yarn=YARN if (pe, seed) == ("rope", 0) else None,
            positions=pe != "learned",
        )
    # An unevaluated run (training crashed) sits beside them and must be skipped.
    (root / "pe=t5,seed=0" / ".hydra").mkdir(parents=True)
    return root


def test_find_runs_sweep_and_run_dirs(sweep: Path):
    runs = find_runs([sweep])
    assert sorted(r.name for r in runs) == sorted(f"pe={pe},seed={s}" for pe, s in PPL)
    # Two levels down, run dirs directly, duplicates dropped, order kept.
    assert len(find_runs([sweep.parent])) == 4
    one = sweep / "pe=alibi,seed=0"
    assert find_runs([one, one / "eval_length.csv", sweep])[0] == one.resolve()
    assert len(find_runs([one, sweep])) == 4


@pytest.mark.parametrize("which", ["missing", "empty", "unevaluated"])
def test_bad_paths_raise_user_error(sweep: Path, tmp_path: Path, which: str):
    bad = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "unevaluated": sweep / "pe=t5,seed=0"}[which]
    if which == "empty":
        bad.mkdir()
    with pytest.raises(UserError) as info:
        find_runs([bad])
    msg = str(info.value)
    assert str(bad) in msg and "\n" not in msg


def test_load_results_metadata_and_labels(sweep: Path):
    rows = load_results([sweep])
    labels = {r["label"] for r in rows}
    # Seed and the logger group differ between runs but are not swept keys; rope_scaling shows in the label.
    assert labels == {"rope", "rope+yarn", "alibi", "learned"}
    r = next(r for r in rows if r["pe"] == "rope" and r["seed"] == 1 and r["eval_len"] == 128)
    assert r["train_seq_len"] == TRAIN and r["ppl"] == 36.5 and r["run_dir"].name == "pe=rope,seed=1"
    na = next(r for r in rows if r["pe"] == "learned" and r["eval_len"] == 512)
    assert na["ppl"] is None and na["status"].startswith("not_applicable")


def test_swept_keys_enter_labels(tmp_path: Path):
    make_run(tmp_path / "a", "rope", 0, PPL[("rope", 0)], base=10000.0)
    make_run(tmp_path / "b", "rope", 0, PPL[("rope", 0)], base=500000.0)
    make_run(tmp_path / "c", "alibi", 0, PPL[("alibi", 0)], seq_len=128)
    labels = {r["label"] for r in load_results([tmp_path])}
    assert labels == {"rope (L=64, base=10000)", "rope (L=64, base=500000)", "alibi (L=128)"}


def test_aggregate_seeds(sweep: Path):
    series = {s.label: s for s in aggregate(select(load_results([sweep]), "nonoverlapping"))}
    vals = [PPL[("rope", 0)][2], PPL[("rope", 1)][2]]
    p = series["rope"].points[256]
    assert (p.n, p.min, p.max) == (2, min(vals), max(vals))
    assert p.mean == pytest.approx(statistics.mean(vals)) and p.std == pytest.approx(statistics.stdev(vals))
    assert series["learned"].points[128].status == "n/a"
    assert series["rope"].seeds == [0, 1]
    with pytest.raises(UserError, match="protocol 'overlap'"):
        select(load_results([sweep]), "overlap")


def _md_rows(text: str) -> dict[str, list[str]]:
    lines = text.strip().splitlines()
    assert re.fullmatch(r"\|(-+:?\|)+", lines[1])
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["encoding", *map(str, LENGTHS)]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:])}


def test_table_markdown_values(sweep: Path):
    rows = _md_rows(perplexity_table([sweep]))
    for i, n in enumerate(LENGTHS):
        vals = [PPL[("rope", 0)][i], PPL[("rope", 1)][i]]
        assert rows["rope"][i] == f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}", n
    assert rows["alibi"] == [f"{v:.2f}" for v in PPL[("alibi", 0)]]
    assert rows["learned"] == ["19.00", "n/a", "n/a", "n/a"]
    assert rows["rope+yarn"][3] == "41.00"
    # The table's order: the paper's encoding order, then variants.
    assert list(rows) == ["learned", "rope", "rope+yarn", "alibi"]


def test_table_csv_latex_and_lengths(sweep: Path, tmp_path: Path):
    parsed = list(csv.reader(io.StringIO(perplexity_table([sweep], lengths=[64, 1024], fmt="csv"))))
    assert parsed[0] == ["encoding", "64", "1024"]
    assert {r[0]: r[1:] for r in parsed[1:]}["learned"] == ["19.00", "—"]
    tex = perplexity_table([sweep], fmt="latex")
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and "multicolumn" not in ln]
    assert tex.startswith("\\begin{table}[t]\n\\centering\n\\caption{Perplexity per byte (lower is better)")
    assert r"\begin{tabular}{lrrrr}" in tex and tex.rstrip().endswith("\\end{tabular}\n\\end{table}")
    assert r"\multicolumn{4}{c}{evaluation length (bytes)}" in tex and r"\label{tab:perplexity}" in tex
    assert all(ln.count("&") == len(LENGTHS) for ln in body) and len(body) == 5
    assert r"$\pm$" in tex and "±" not in tex
    # The best (lowest) mean at each length in bold, whatever follows it: learned at 64, alibi beyond.
    cells = {ln.split(" & ")[0]: ln.split(" & ")[1:] for ln in body[1:]}
    assert cells["learned"][0] == r"\textbf{19.00}" and cells["alibi"][3] == r"\textbf{20.25} \\"
    assert not any("textbf" in c for c in cells["rope"])
    out = write_table([sweep], tmp_path / "tables" / "ppl.tex")
    assert out.read_text() == tex and not list(out.parent.glob(".*tmp"))
    for bad, kw in (("fmt 'xlsx'", {"fmt": "xlsx"}), ("'-3'", {"lengths": ["-3"]})):
        with pytest.raises(UserError, match=bad.split()[-1]):
            perplexity_table([sweep], **kw)


def test_length_figure_lines_ticks_and_files(sweep: Path, tmp_path: Path):
    fig = length_figure([sweep], band="std")
    try:
        ax = fig.axes[0]
        lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert set(lines) == {"rope", "rope+yarn", "alibi", "learned", "train length"}
        assert list(lines["train length"].get_xdata()) == [TRAIN, TRAIN]
        assert list(lines["learned"].get_xdata()) == [64]  # ends at the training length
        assert list(lines["rope"].get_ydata()) == pytest.approx(
            [statistics.mean(v) for v in zip(PPL[("rope", 0)], PPL[("rope", 1)])]
        )
        # Each scaling method its own colour; plain RoPE keeps the encoding's.
        assert lines["rope"].get_color() == PALETTE["rope"] and lines["rope+yarn"].get_color() == "#7b4173"
        assert lines["rope"].get_marker() != lines["rope+yarn"].get_marker()
        # A one-point series is a marker, in the plot and so in its legend entry.
        assert lines["learned"].get_linestyle() == "None" and lines["learned"].get_marker() not in ("", "None")
        assert list(ax.get_xticks()) == LENGTHS
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in LENGTHS]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        # Units (the rows' tokenizer: bytes) and the log scales are named on the axes.
        assert ax.get_xlabel() == "evaluation length (bytes, log scale)"
        assert ax.get_ylabel() == "perplexity per byte (log scale)"
        assert len(ax.collections) == 1  # one band: only rope has several seeds
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    written = plot_length([sweep], tmp_path / "figs" / "ppl.png")
    assert [p.name for p in written] == ["ppl.png", "ppl.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[1].read_bytes()[:5] == b"%PDF-"
    with pytest.raises(UserError, match="band 'iqr'"):
        plot_length([sweep], tmp_path / "x.png", band="iqr")


def test_plot_positions(sweep: Path, tmp_path: Path):
    written = plot_positions([sweep], tmp_path / "figs")
    assert [p.name for p in written] == ["loss_vs_position.png", "loss_vs_position.pdf"]
    assert all(p.stat().st_size > 1000 for p in written)
    with pytest.raises(UserError, match="eval_positions.csv"):
        plot_positions([sweep / "pe=learned,seed=0"], tmp_path / "p.png")


def _write_rows(run: Path, rows: list[dict]) -> None:
    with open(run / "eval_length.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({"pe": "rope", "train_seq_len": TRAIN, "rope_scaling": "none", "n_tokens": 1, "status": "ok",
                          "nll": math.log(r["ppl"]), **r} for r in rows)


def test_each_scaling_its_own_colour(tmp_path: Path):
    from ropebench.report.plot import SCALING_COLOURS, _styles, shade
    from ropebench.report.results import Series

    run = make_run(tmp_path / "run", "rope", 0, PPL[("rope", 0)])
    _write_rows(run, [{"eval_len": n, "protocol": "nonoverlapping", "stride": n, "rope_scaling": s, "ppl": 10.0 + i}
                      for i, s in enumerate(("none", *SCALING_COLOURS)) for n in LENGTHS])
    fig = length_figure([run])
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("rope")}
    assert set(lines) == {"rope", "rope+linear", "rope+ntk", "rope+dynamic", "rope+yarn"}
    assert len({ln.get_color() for ln in lines.values()}) == 5 and len({ln.get_marker() for ln in lines.values()}) == 5
    assert {lines[f"rope+{s}"].get_color() for s in SCALING_COLOURS} == set(SCALING_COLOURS.values())
    # Two pairs that want one colour (YaRN on RoPE and on xPos) still get two; variants of a pair take shades of
    # it and their own line style.
    series = [Series(lab, pe, [], [], {}, sc) for lab, pe, sc in
              (("a", "rope", "yarn"), ("b", "xpos", "yarn"), ("c", "rope", "yarn"), ("d", "rope", "none"))]
    st = _styles(series)
    assert st["a"][0] != st["b"][0] and st["c"][0] == shade(st["a"][0], 1, 2) != st["a"][0]
    assert st["a"][1] != st["c"][1]
    assert st["d"][0] == PALETTE["rope"] and st["b"][0] not in {PALETTE["rope"], st["a"][0]}


def test_unknown_encodings_get_colours_and_order_comes_from_one_place(tmp_path: Path):
    from ropebench.report.plot import colour
    from ropebench.report.results import ENCODING_ORDER

    assert list(PALETTE) == list(ENCODING_ORDER)  # the palette is keyed by the one ordering
    for pe in ("myenc", "anyenc"):
        make_run(tmp_path / pe, pe, 0, PPL[("alibi", 0)])
    make_run(tmp_path / "rope", "rope", 0, PPL[("rope", 0)])
    fig = length_figure([tmp_path])
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith(("_", "train"))}
    assert list(lines) == ["rope", "anyenc", "myenc"]  # known first, then unknown by name
    assert len({ln.get_color() for ln in lines.values()}) == 3
    assert colour("myenc") == colour("myenc") and re.fullmatch(r"#[0-9a-f]{6}", colour("myenc"))
    assert {colour(pe) for pe in ("myenc", "anyenc", "x", "y")}.isdisjoint(PALETTE.values())  # never a known one


def _sliding(run: Path, fixed: tuple[int, ...]) -> None:
    rows = [{"eval_len": n, "protocol": "sliding", "stride": n // 2, "ppl": 30.0 + i} for i, n in enumerate(LENGTHS)]
    rows += [{"eval_len": n, "protocol": "sliding", "stride": s, "ppl": 20.0 + i + s / 100}
             for s in fixed for i, n in enumerate(LENGTHS) if s != n // 2]  # the evaluator merges equal keys
    _write_rows(run, rows)


def test_sliding_strides_one_series_per_rule(tmp_path: Path):
    run = make_run(tmp_path / "run", "rope", 0, PPL[("rope", 0)])
    _sliding(run, ())
    fig = length_figure([run], protocol="sliding")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()][:1] == ["rope"] and "sliding, stride L/2" in ax.get_title()
    _sliding(run, (8, 16, 32))
    series = aggregate(select(load_results([run]), "sliding"))
    # Numeric order, not text order ("16" < "8"); every rule a whole curve.
    assert [s.label for s in series] == ["rope [stride 8]", "rope [stride 16]", "rope [stride 32]", "rope [stride L/2]"]
    assert all(sorted(s.points) == LENGTHS for s in series)
    by = {s.label: s for s in series}
    # stride 32 at length 64 is both rules' point
    assert by["rope [stride 32]"].points[64].mean == by["rope [stride L/2]"].points[64].mean == 30.0
    assert by["rope [stride 8]"].points[512].mean == pytest.approx(23.08)
    fig = length_figure([run], protocol="sliding")
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("rope")]
    # One encoding and scaling, four stride rules: shades of RoPE's colour, each its own line style.
    assert len(lines) == 4 and len({ln.get_color() for ln in lines}) == 4 and lines[0].get_color() == PALETTE["rope"]
    assert len({ln.get_linestyle() for ln in lines}) == 4
    table = _md_rows(perplexity_table([run], protocol="sliding"))
    assert list(table) == [s.label for s in series]


def test_lone_fixed_stride_is_one_curve(sweep: Path):
    # make_run's sliding rows are one `--stride 32` evaluation; 32 is also L/2 at 64, which adds no curve.
    fig = length_figure([sweep / "pe=alibi,seed=0"], protocol="sliding")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["alibi", "train length"]
    assert list(ax.get_lines()[0].get_xdata()) == LENGTHS and "stride 32" in ax.get_title()


def test_log_axis_labels_past_ten_and_band_note(sweep: Path):
    from ropebench.report.plot import plain_log_ticks

    fig = length_figure([sweep])
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels() if t.get_text()}
    assert {"20", "30", "100", "200"} <= set(labels)  # perplexities 19 to 300
    assert all(float(text) == pytest.approx(y) for text, y in labels.items())
    notes = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend, the figure's
    assert "shaded: min–max over 2 seeds" in notes and "cannot run longer" in notes
    std = [t.get_text() for t in length_figure([sweep], band="std").legends[0].get_texts()]
    assert "shaded: mean ± 1 std over 2 seeds" in std
    assert plain_log_ticks(4.5, 35) == [5, 6, 8, 10, 20, 30]
    assert plain_log_ticks(19.5, 33) == [20, 25, 30]  # a narrow range gets the finer steps
    assert plain_log_ticks(1.0, 1e6) == [1, 10, 100, 1e3, 1e4, 1e5, 1e6]
    assert plain_log_ticks(2.0, 1e12)[:2] == [10, 1e3] and len(plain_log_ticks(2.0, 1e12)) <= 9
    narrow = plain_log_ticks(5.4, 5.7)
    assert len(narrow) >= 2 and all(5.4 <= t <= 5.7 for t in narrow)


def test_positions_length_and_smoothing(sweep: Path):
    import numpy as np

    from ropebench.report.positions import moving_average, positions_figure

    lines = {ln.get_label(): ln for ln in positions_figure([sweep], length=128).axes[0].get_lines()}
    assert set(lines) == {"rope @ 128", "alibi @ 128", "train length"}
    assert list(lines["rope @ 128"].get_ydata()) == [3.0, 3.5]  # 3 + start/length, buckets of 64
    fig = positions_figure([sweep], smooth=3)
    ys = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "rope @ 512").get_ydata()
    raw = [3.0 + start / 512 for start in range(0, 512, 64)]
    np.testing.assert_allclose(ys[1:-1], np.convolve(raw, np.ones(3) / 3, mode="valid"))
    assert ys[0] == pytest.approx((raw[0] + raw[1]) / 2) and ys[-1] == pytest.approx((raw[-2] + raw[-1]) / 2)
    assert "moving average of 3 buckets" in fig.axes[0].get_ylabel()
    assert moving_average([1.0, 2.0, 6.0, 3.0], 2) == [1.5, 4.0, 4.5, 3.0]  # even k: one more after
    with pytest.raises(UserError, match="length 100; evaluated: 128, 512"):
        positions_figure([sweep], length=100)
    with pytest.raises(UserError, match="smooth '0'"):
        positions_figure([sweep], smooth=0)


# --- results on different tokens ---------------------------------------------------------------------------------


def _rewrite_n_tokens(run: Path, eval_len: int, n_tokens: int) -> None:
    path = run / "eval_length.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if int(r["eval_len"]) == eval_len and r["protocol"] == "nonoverlapping" and r["rope_scaling"] == "none":
            r["n_tokens"] = str(n_tokens)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_results_on_the_same_tokens_print_no_warning(sweep: Path, capsys):
    perplexity_table([sweep])
    assert "warning" not in capsys.readouterr().err


def test_a_length_scored_on_other_tokens_is_named_in_a_warning(sweep: Path, capsys):
    """One run re-evaluated at 64 with another --max-tokens: its curve mixes texts, and at 64 it is not on the
    text the other runs were scored on. Both are said; the table is still made."""
    _rewrite_n_tokens(sweep / "pe=alibi,seed=0", 64, 16384)
    perplexity_table([sweep])
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, warnings
    across, within = warnings
    assert "different numbers of tokens at length 64 " in across and "alibi 16,384" in across and "4,096" in across
    assert "pe=alibi,seed=0" in within and "64: 16,384, 128: 4,096" in within
    length_figure([sweep])  # the figure warns the same way
    assert len([ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]) == 2


def test_lengths_past_16x_may_score_fewer_tokens(tmp_path: Path, capsys):
    run = make_run(tmp_path / "rope", "rope", 0, PPL[("rope", 0)], seq_len=16)  # 512 = 32x: fewer documents
    _rewrite_n_tokens(run, 512, 1000)
    perplexity_table([run])
    assert "warning" not in capsys.readouterr().err


def test_table_lengths_nobody_evaluated(sweep: Path, capsys):
    with pytest.raises(UserError, match="no run here was evaluated at length 999; the evaluated lengths are 64, 128"):
        perplexity_table([sweep], lengths=[999])
    perplexity_table([sweep], lengths=[64, 999])
    assert "no run here was evaluated at length 999 (its column is empty)" in capsys.readouterr().err
