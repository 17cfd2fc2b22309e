"""Does the model use the context past its training length? ``nll_gain`` against evaluation length.

The gain is the cropped baseline's NLL minus the full NLL (ropebench.eval.crop), in nats per token: above the
zero line the longer context helps, on it the model scores as if it saw only its last L tokens. One line per
series (mean over seeds, band across seeds); a single seed's band is +-2 standard errors over documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.report.plot import BANDS, FigureOptions, _log2_ticks, _pyplot, _styles, _train_lines, render
from ropebench.report.results import aggregate, load_results, select
from ropebench.report.tokens import warn_few_documents, warn_unequal_tokens


def _band(point, band: str) -> tuple[float, float]:
    if point.n > 1:
        return (point.min, point.max) if band == "minmax" else (point.mean - point.std, point.mean + point.std)
    return point.mean - 2 * point.se, point.mean + 2 * point.se


def gain_figure(paths: Iterable[str | Path], protocol: str = "nonoverlapping", band: str = "minmax",
                opts: FigureOptions = FigureOptions(), split: str | None = None):
    """Build the gain-vs-length Figure."""
    choose("band", band, BANDS)
    rows = select(load_results(paths, renames=opts.renames), protocol, split)
    warn_unequal_tokens(rows)
    warn_few_documents(rows)
    series = [s for s in aggregate(rows, "nll_gain") if any(p.status == "ok" for p in s.points.values())]
    if not series:
        raise UserError("no cropped baseline in these results (nll_gain); evaluate with `ropebench eval-length "
                        "RUN --crop` first")
    styles = _styles(series)
    fig, ax = _pyplot().subplots(figsize=opts.figsize or (7.0, 4.2))
    lengths = set()
    for s in series:
        pts = [p for _, p in sorted(s.points.items()) if p.status == "ok"]
        xs = [p.eval_len for p in pts]
        lengths.update(xs)
        colour, line, marker = styles[s.label]
        ax.plot(xs, [p.mean for p in pts], color=colour, linestyle=line, marker=marker, markersize=4,
                linewidth=1.6, label=s.label, zorder=3)
        lo, hi = zip(*(_band(p, band) for p in pts))
        if all(v == v for v in lo + hi):  # NaN: a single seed without standard errors
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0, zorder=2)
    ax.axhline(0.0, color="0.2", linewidth=1.0, zorder=1)
    _train_lines(ax, sorted({L for s in series for L in s.train_seq_lens}))
    _log2_ticks(ax, sorted(lengths))
    ax.set_xlabel("evaluation length (tokens, log scale)")
    ax.set_ylabel("gain from context past L\n(cropped − full NLL, nats/token)")
    seeds = max(len(s.seeds) for s in series)
    shade = (("min–max" if band == "minmax" else "mean ± 1 std") + " over seeds") if seeds > 1 \
        else "± 2 standard errors over documents"
    ax.set_title(opts.title_or(f"Does the model use the longer context? ({protocol}; shaded: {shade})"),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, fontsize=8)
    return fig


def plot_gain(paths: Iterable[str | Path], out: str | Path, protocol: str = "nonoverlapping", band: str = "minmax",
              opts: FigureOptions = FigureOptions(), split: str | None = None) -> list[Path]:
    return render(lambda: gain_figure(paths, protocol, band, opts, split), out, "gain_vs_length", opts)
