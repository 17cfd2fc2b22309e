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
from ropebench.plot import PALETTE, length_figure, plot_length, plot_positions
from ropebench.results import aggregate, find_runs, load_results, select
from ropebench.table import perplexity_table, write_table

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
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\")]
    assert tex.startswith(r"\begin{tabular}{lrrrr}") and tex.rstrip().endswith(r"\end{tabular}")
    assert all(ln.count("&") == len(LENGTHS) for ln in body) and len(body) == 5
    assert r"$\pm$" in tex and "±" not in tex
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
        assert lines["rope"].get_color() == PALETTE["rope"] == lines["rope+yarn"].get_color()
        assert lines["rope"].get_linestyle() != lines["rope+yarn"].get_linestyle()
        assert list(ax.get_xticks()) == LENGTHS
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in LENGTHS]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel() == "evaluation length (tokens)" and ax.get_ylabel() == "perplexity"
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
