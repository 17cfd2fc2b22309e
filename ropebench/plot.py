"""Figures from finished runs: perplexity vs evaluation length, and loss vs position.

Colours are fixed per encoding so that RoPE is the same blue in every figure of a paper; variants of one
encoding (other base, rope_scaling, train length) share its colour and differ in line style and marker.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.results import POSITIONS_CSV, Series, aggregate, load_results, select

PALETTE = {
    "rope": "#1f77b4",
    "sinusoidal": "#ff7f0e",
    "learned": "#2ca02c",
    "t5": "#d62728",
    "alibi": "#9467bd",
    "nope": "#8c564b",
    "xpos": "#e377c2",
    "kerple": "#7f7f7f",
    "fire": "#bcbd22",
}
# For encodings added later: a colour derived from the name, so it too is stable across figures.
_FALLBACK = ("#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")
BANDS = ("minmax", "std")


def colour(pe: str) -> str:
    return PALETTE.get(pe) or _FALLBACK[zlib.crc32(pe.encode()) % len(_FALLBACK)]


def _styles(series: list[Series]) -> dict[str, tuple[str, str, str]]:
    """label -> (colour, linestyle, marker); the n-th variant of an encoding gets the n-th style."""
    seen: dict[str, int] = {}
    out = {}
    for s in series:
        i = seen.get(s.pe, 0)
        seen[s.pe] = i + 1
        out[s.label] = (colour(s.pe), _STYLES[i % len(_STYLES)], _MARKERS[i % len(_MARKERS)])
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display
    import matplotlib.pyplot as plt

    return plt


def _outputs(out: str | Path, default_stem: str) -> tuple[Path, Path]:
    """``fig.png`` -> fig.png + fig.pdf; a path without suffix is a directory to write default_stem into."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix else out / default_stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")


def _save(fig, out: str | Path, default_stem: str) -> list[Path]:
    written = []
    for path in _outputs(out, default_stem):
        fmt = path.suffix[1:]
        tmp = path.with_name(f".{path.name}.tmp")
        # No creation date in the PDF, so re-plotting unchanged results gives an identical file.
        fig.savefig(
            tmp, format=fmt, dpi=200, bbox_inches="tight", metadata={"CreationDate": None} if fmt == "pdf" else None
        )
        os.replace(tmp, path)  # a reader (LaTeX, a browser) never sees a half-written figure
        written.append(path)
    return written


def _train_lines(ax, train_lens: list[int]) -> None:
    for L in train_lens:
        name = "train length" if len(train_lens) == 1 else f"train length {L}"
        ax.axvline(L, color="0.35", linestyle="--", linewidth=1.0, label=name, zorder=1)


def _log2_ticks(ax, lengths: list[int]) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_major_formatter(FixedFormatter([str(n) for n in lengths]))
    ax.xaxis.set_minor_locator(NullLocator())  # only the lengths that were actually evaluated
    if len(lengths) > 8:
        ax.tick_params(axis="x", labelrotation=45)


def length_figure(paths: Iterable[str | Path], protocol: str = "nonoverlapping", band: str = "minmax"):
    """Build (not save) the perplexity-vs-length Figure; one legend entry per label."""
    choose("band", band, BANDS)
    rows = select(load_results(paths), protocol)
    series = aggregate(rows)
    lengths = sorted({p.eval_len for s in series for p in s.points.values() if p.status == "ok"})
    if not lengths:
        raise UserError(f"no successful '{protocol}' evaluations to plot; every row has a non-ok status")
    train_lens = sorted({L for s in series for L in s.train_seq_lens})
    plt = _pyplot()
    from matplotlib.ticker import LogFormatter

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    styles = _styles(series)
    for s in series:
        c, ls, marker = styles[s.label]
        pts = [p for _, p in sorted(s.points.items()) if p.status == "ok"]
        if not pts:
            continue
        xs = [p.eval_len for p in pts]
        ax.plot(
            xs,
            [p.mean for p in pts],
            color=c,
            linestyle=ls,
            marker=marker,
            markersize=4,
            linewidth=1.6,
            label=s.label,
            zorder=3,
        )
        if any(p.n > 1 for p in pts):
            lo = [p.min if band == "minmax" else max(p.mean - p.std, 1e-9) for p in pts]
            hi = [p.max if band == "minmax" else p.mean + p.std for p in pts]
            ax.fill_between(xs, lo, hi, color=c, alpha=0.18, linewidth=0, zorder=2)
        if any(p.status == "n/a" and p.eval_len > xs[-1] for p in s.points.values()):
            # The encoding cannot go further (learned positions end at max_len): say so instead of
            # letting the line just stop.
            ax.plot(
                [xs[-1]],
                [pts[-1].mean],
                marker="x",
                color=c,
                markersize=9,
                mew=2,
                linestyle="none",
                label="_end",
                zorder=4,
            )
    _train_lines(ax, train_lens)
    _log2_ticks(ax, lengths)
    ax.set_yscale("log")
    # Plain numbers (20, 30, 200) rather than 2x10^1: perplexities span a decade or two at most.
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("perplexity")
    strides = sorted({r.get("stride") for r in rows if r.get("stride")})
    how = protocol if protocol != "sliding" or len(strides) != 1 else f"sliding, stride {strides[0]}"
    trained = f", trained at {train_lens[0]} tokens" if len(train_lens) == 1 else ""
    ax.set_title(f"Train short, test long ({how}{trained})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, fontsize=8)
    return fig


def plot_length(
    paths: Iterable[str | Path], out: str | Path, protocol: str = "nonoverlapping", band: str = "minmax"
) -> list[Path]:
    """Perplexity vs evaluation length as PNG and PDF; returns the written paths."""
    fig = length_figure(paths, protocol=protocol, band=band)
    try:
        return _save(fig, out, "ppl_vs_length")
    finally:
        _pyplot().close(fig)


def positions_figure(paths: Iterable[str | Path], protocol: str = "nonoverlapping"):
    """Build the loss-vs-position Figure at each label's largest evaluated length."""
    choose("protocol", protocol, ("nonoverlapping", "sliding"))
    rows = [
        r
        for r in load_results(paths, filename=POSITIONS_CSV)
        if r["protocol"] == protocol and r.get("mean_nll") is not None and r.get("position_start") is not None
    ]
    if not rows:
        raise UserError(
            f"no {POSITIONS_CSV} with '{protocol}' rows in the given runs; evaluate with per-position losses first"
        )
    # Per label, the longest length any of its runs reached: that is where extrapolation shows.
    longest: dict[str, int] = {}
    for r in rows:
        longest[r["label"]] = max(longest.get(r["label"], 0), r["eval_len"])
    curves: dict[str, dict[tuple[int, int], list[float]]] = {}
    pes: dict[str, str] = {}
    for r in rows:
        if r["eval_len"] == longest[r["label"]]:
            bucket = (r["position_start"], r["position_end"])
            curves.setdefault(r["label"], {}).setdefault(bucket, []).append(r["mean_nll"])
            pes[r["label"]] = r["pe"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    fake = [Series(label, pes[label], [], [], {}) for label in curves]
    styles = _styles(fake)
    for label, buckets in curves.items():
        c, ls, marker = styles[label]
        items = sorted(buckets.items())
        xs = [(start + end) / 2 for (start, end), _ in items]  # bucket midpoint
        ys = [sum(v) / len(v) for _, v in items]  # mean over seeds
        # markers too: with more variants of one encoding than line styles, styles alone repeat
        ax.plot(xs, ys, color=c, linestyle=ls, marker=marker, markersize=3.5, markevery=max(1, len(xs) // 8),
                linewidth=1.4, label=f"{label} @ {longest[label]}")
    _train_lines(ax, sorted({r["train_seq_len"] for r in rows if r["train_seq_len"]}))
    ax.set_xlabel("position in sequence (tokens)")
    ax.set_ylabel("mean loss (nats/token)")
    ax.set_title(f"Loss by position at the longest evaluated length ({protocol})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, fontsize=8)
    return fig


def plot_positions(paths: Iterable[str | Path], out: str | Path, protocol: str = "nonoverlapping") -> list[Path]:
    """Loss vs position (eval_positions.csv) as PNG and PDF; returns the written paths."""
    fig = positions_figure(paths, protocol=protocol)
    try:
        return _save(fig, out, "loss_vs_position")
    finally:
        _pyplot().close(fig)
