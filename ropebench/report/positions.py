"""The loss-by-position figure (``plot --by-position``): mean loss against the position in the sequence at one
evaluation length, one curve per series (seeds averaged), from ``eval_positions.csv``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.report.axes import legend_below, units
from ropebench.report.plot import FigureOptions, _pyplot, _styles, _train_lines, render
from ropebench.report.results import POSITIONS_CSV, Series, load_results, series_sort_key


def moving_average(values: list[float], k: int) -> list[float]:
    """Mean over a window of k neighbouring buckets, centred (one more after than before when k is even);
    at the ends the window is cut short rather than padded, so every bucket keeps a value."""
    before, after = (k - 1) // 2, k // 2
    out = []
    for i in range(len(values)):
        window = values[max(0, i - before) : i + after + 1]
        out.append(sum(window) / len(window))
    return out


def _position_curves(rows: list[dict], length: int | None) -> dict[str, tuple[int, dict]]:
    """label -> (eval_len, {bucket: [mean_nll per seed]}) at ``length``, or at the label's longest length."""
    longest: dict[str, int] = {}
    for r in rows:
        longest[r["label"]] = max(longest.get(r["label"], 0), r["eval_len"])
    curves: dict[str, tuple[int, dict]] = {}
    for r in rows:
        at = length or longest[r["label"]]
        if r["eval_len"] == at:
            buckets = curves.setdefault(r["label"], (at, {}))[1]
            buckets.setdefault((r["position_start"], r["position_end"]), []).append(r["mean_nll"])
    return curves


def positions_figure(paths: Iterable[str | Path], protocol: str = "nonoverlapping", length: int | None = None,
                     smooth: int = 1, opts: FigureOptions = FigureOptions()):
    """Build the loss-vs-position Figure at ``length`` (default: each label's longest evaluated length),
    averaged over seeds and, with ``smooth`` > 1, over that many neighbouring position buckets."""
    choose("protocol", protocol, ("nonoverlapping", "sliding"))
    if not isinstance(smooth, int) or smooth < 1:
        raise UserError(f"smooth '{smooth}' is not a positive number of buckets; use 1 (none) or more, e.g. 3")
    rows = [
        r
        for r in load_results(paths, filename=POSITIONS_CSV, renames=opts.renames)
        if r["protocol"] == protocol and r["mean_nll"] is not None and r["position_start"] is not None
    ]
    if not rows:
        raise UserError(
            f"no {POSITIONS_CSV} with '{protocol}' rows in the given runs; evaluate with per-position losses first"
        )
    have = sorted({r["eval_len"] for r in rows})
    if length is not None and length not in have:
        raise UserError(f"no per-position losses at length {length}; evaluated: {', '.join(map(str, have))}")
    curves = _position_curves(rows, length)
    pes = {r["label"]: (r["pe"], r["rope_scaling"]) for r in rows}
    order = sorted((Series(label, pes[label][0], [], [], {}, pes[label][1]) for label in curves), key=series_sort_key)
    styles = _styles(order)
    fig, ax = _pyplot().subplots(figsize=opts.figsize or (7.0, 4.6), layout="constrained")
    for label, (at, buckets) in ((s.label, curves[s.label]) for s in order):
        c, ls, marker = styles[label]
        items = sorted(buckets.items())
        xs = [(start + end) / 2 for (start, end), _ in items]  # bucket midpoint
        ys = moving_average([sum(v) / len(v) for _, v in items], smooth)  # mean over seeds, then over buckets
        ax.plot(xs, ys, color=c, linestyle=ls, marker=marker, markersize=3.5, markevery=max(1, len(xs) // 8),
                linewidth=1.4, label=f"{label} @ {at}")
    _train_lines(ax, sorted({r["train_seq_len"] for r in rows if r["train_seq_len"]}))
    unit = units(rows)
    ax.set_xlabel(f"position in the sequence ({unit.length})")
    ax.set_ylabel(f"mean loss (nats {unit.per})" + (f"\nmoving average of {smooth} buckets" if smooth > 1 else ""))
    where = f"{length} {unit.length}" if length else "the longest evaluated length"
    ax.set_title(opts.title_or(f"Loss by position at {where} ({protocol})"))
    ax.grid(True, alpha=0.3)
    legend_below(fig, ax.get_legend_handles_labels()[0], grow=opts.figsize is None)
    return fig


def plot_positions(paths: Iterable[str | Path], out: str | Path, protocol: str = "nonoverlapping",
                   length: int | None = None, smooth: int = 1, opts: FigureOptions = FigureOptions()) -> list[Path]:
    """Loss vs position (eval_positions.csv); returns the written paths."""
    return render(lambda: positions_figure(paths, protocol, length, smooth, opts), out, "loss_vs_position", opts)
