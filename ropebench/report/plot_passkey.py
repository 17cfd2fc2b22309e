"""The passkey figure: accuracy by evaluation length (x) and key depth (y), one heatmap per run label.

Runs that share a label (seeds of one configuration) are averaged cell by cell; each panel's title carries
the effective context as PI (>= 20%) and YaRN (>= 80%) define it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ropebench.errors import UserError
from ropebench.eval.passkey import CSV_NAME, THRESHOLDS, effective_context
from ropebench.report.plot import FigureOptions, _pyplot, render
from ropebench.report.results import input_dir, make_label, read_rows, read_run, swept_keys

REQUIRED = ("eval_len", "depth", "accuracy")


def find_passkey_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories with a passkey.csv: given directly, as the CSV itself, or one or two levels down."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = input_dir(raw, CSV_NAME)
        runs = [path] if (path / CSV_NAME).is_file() else sorted(
            p.parent for pattern in (f"*/{CSV_NAME}", f"*/*/{CSV_NAME}") for p in path.glob(pattern))
        if not runs:
            raise UserError(f"path '{raw}' holds no {CSV_NAME}; run `ropebench passkey RUN_DIR` first")
        for run in runs:
            found[run.resolve()] = None
    return list(found)


def load_passkey(paths: Iterable[str | Path]) -> dict[str, list[dict]]:
    """label -> rows (accuracy as float, None where not measured), labels in first-seen order.

    Damaged rows are skipped with one warning per file (see results.read_rows)."""
    tables = {p: read_rows(p / CSV_NAME, REQUIRED, value="accuracy") for p in find_passkey_runs(paths)}
    runs = [read_run(p, (rows or [None])[0]) for p, rows in tables.items()]  # the CSV names pe without a config
    swept = swept_keys(runs)
    panels: dict[str, list[dict]] = {}
    for run in runs:
        for row in tables[run.run_dir]:
            if row["status"] != "ok":
                row["accuracy"] = None
            label = make_label(run.pe, row["rope_scaling"], swept.get(run.run_dir, []), row["logit_scale"])
            panels.setdefault(label, []).append(row)
    if not any(r["accuracy"] is not None for rows in panels.values() for r in rows):
        raise UserError("no successful passkey evaluations to plot; every row has a non-ok status")
    return panels


def _grid(rows: list[dict]):
    """(lengths, depths, cells) with cells[depth][length] = mean accuracy across seeds, or None."""
    lengths = sorted({r["eval_len"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    sums: dict[tuple[float, int], list[float]] = {}
    for r in rows:
        if r["accuracy"] is not None:
            sums.setdefault((r["depth"], r["eval_len"]), []).append(r["accuracy"])
    cells = [[(sum(v) / len(v)) if (v := sums.get((d, L))) else None for L in lengths] for d in depths]
    return lengths, depths, cells


def _mean_rows(lengths, depths, cells) -> list[dict]:
    # One row per cell with the seed mean, so effective_context sees each (length, depth) once.
    return [{"eval_len": L, "depth": d, "accuracy": "" if a is None else a, "status": "ok" if a is not None else "-"}
            for d, row in zip(depths, cells) for L, a in zip(lengths, row)]


def _trials(rows: list[dict]) -> str:
    """How many trials each measured cell's accuracy rests on (summed over seeds), e.g. "32 trials per cell"."""
    per_cell: dict[tuple[float, int], int] = {}
    for r in rows:
        if r["accuracy"] is not None and r.get("trials"):
            per_cell[(r["depth"], r["eval_len"])] = per_cell.get((r["depth"], r["eval_len"]), 0) + r["trials"]
    if not per_cell:
        return "trials per cell unknown"
    lo, hi = min(per_cell.values()), max(per_cell.values())
    return f"{lo} trials per cell" if lo == hi else f"{lo}–{hi} trials per cell"


def _panel(ax, image_kw: dict, label: str, rows: list[dict]):
    """One label's heatmap with its cell values, effective context and trial count; returns the image."""
    import numpy as np

    lengths, depths, cells = _grid(rows)
    data = np.array([[np.nan if a is None else a for a in row] for row in cells], dtype=float)
    image = ax.imshow(np.ma.masked_invalid(data), aspect="auto", origin="upper", **image_kw)
    for i, row in enumerate(cells):
        for j, a in enumerate(row):
            # viridis is dark below ~0.6 and light above: white text there, black here
            text, colour = ("n/a", "0.3") if a is None else (f"{a:.2f}", "white" if a < 0.6 else "black")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("evaluation length (tokens)")
    mean_rows = _mean_rows(lengths, depths, cells)
    ctx = {name: effective_context(mean_rows, t) for name, t in THRESHOLDS.items()}
    ax.set_title(f"{label} ({_trials(rows)})\neffective context: PI {ctx['pi'] or '-'}, YaRN {ctx['yarn'] or '-'}",
                 fontsize=9)
    return image


def passkey_figure(paths: Iterable[str | Path], opts: FigureOptions = FigureOptions()):
    """Build (not save) the heatmap Figure."""
    panels = load_passkey(paths)
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 3)
    nrows = -(-n // cols)
    # constrained layout keeps the panel titles, depth labels and colour bar from overlapping
    fig, axes = plt.subplots(nrows, cols, figsize=opts.figsize or (4.4 * cols, 3.6 * nrows), squeeze=False,
                             layout="constrained")
    # viridis: perceptually uniform and colour-blind safe; grey marks cells not measured / not applicable
    image_kw = {"cmap": plt.get_cmap("viridis").with_extremes(bad="0.85"), "vmin": 0.0, "vmax": 1.0}
    image = None
    for index, (ax, (label, rows)) in enumerate(zip(axes.flat, panels.items())):
        image = _panel(ax, image_kw, label, rows)
        if index % cols == 0:
            ax.set_ylabel("key depth")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="exact-match accuracy (fraction of trials)")
    if title := opts.title_or("Passkey retrieval"):
        fig.suptitle(title, fontsize=11)
    return fig


def plot_passkey(paths: Iterable[str | Path], out: str | Path, opts: FigureOptions = FigureOptions()) -> list[Path]:
    """Passkey accuracy heatmaps; returns the written paths (see ropebench.report.plot for the formats)."""
    return render(lambda: passkey_figure(paths, opts), out, "passkey", opts)
