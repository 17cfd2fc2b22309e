"""Figures from finished runs: perplexity vs evaluation length, and loss vs position.

Colours are fixed per (encoding, rope_scaling) so that plain RoPE is the same blue in every figure of a paper
and RoPE+YaRN the same plum; variants of one such pair (other base, train length, stride) take shades of its
colour and their own line style. Every series also gets its own marker, so a figure still reads in grey. Axes
say their unit (per byte, or per token of the rows' tokenizer) and their log scale; one legend sits below the
axes, so the plot keeps the figure's width.

Output formats follow the file name: ``.png`` writes a PNG and a PDF beside it (slides and papers from one
call), ``.pdf`` and ``.svg`` write that file alone; a name without suffix is a directory.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.report.axes import legend_below, relative_to_train_length, units
from ropebench.report.identity import Renames
from ropebench.report.results import ENCODING_ORDER, Series, aggregate, load_results, select
from ropebench.report.tokens import warn_unequal_tokens
from ropebench.run.rundir import atomic_write

DPI = 200  # every raster figure ropebench writes
FORMATS = ("png", "pdf", "svg")
# matplotlib's tab10, in ENCODING_ORDER's order (RoPE keeps tab10's first colour, blue), then tab20b/c tones for
# the encodings of 2024-2025 (tab10's cyan is linear scaling's); an encoding added to ENCODING_ORDER takes the next
# one, and a name not there at all gets a colour derived from the name.
_COLOURS = ("#ff7f0e", "#2ca02c", "#1f77b4", "#e377c2", "#d62728", "#9467bd", "#7f7f7f", "#bcbd22", "#8c564b",
            "#e7ba52", "#6b6ecf", "#ad494a", "#17becf")
PALETTE = dict(zip(ENCODING_ORDER, _COLOURS, strict=False))
# rope_scaling methods (ropebench.core.rope.freqs.ROPE_TYPES), dark tones of hues the encodings do not use.
SCALING_COLOURS = {"linear": "#17becf", "ntk": "#637939", "dynamic": "#8c6d31", "yarn": "#7b4173"}
# For names without a colour of their own (picked by a hash of the name, so stable too): none of the above.
_EXTRA = ("#393b79", "#843c39", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#000000")
# Spares for two series of one figure that want the same colour.
_POOL = (*_COLOURS, *SCALING_COLOURS.values(), *_EXTRA)
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
BANDS = ("minmax", "std")


def colour(pe: str, scaling: str = "none") -> str:
    """The colour of an (encoding, rope_scaling) series: the same in every figure, for any name."""
    method = scaling.split("(")[0]  # "yarn(factor=4)" is a YaRN curve too
    known = PALETTE.get(pe) if method in ("", "none") else SCALING_COLOURS.get(method)
    return known or _EXTRA[zlib.crc32(f"{pe}+{method}".encode()) % len(_EXTRA)]


def shade(hex_colour: str, variant: int, variants: int) -> str:
    """The ``variant``-th of ``variants`` shades of a colour: the colour itself first, then alternately darker and
    lighter (mixed up to 55% with black or white), so variants of one method look related but never alike."""
    from matplotlib.colors import to_hex, to_rgb

    if variant == 0:
        return hex_colour
    steps = max(1, variants // 2)
    mix = 0.55 * ((variant + 1) // 2) / steps
    target = 0.0 if variant % 2 else 1.0
    return to_hex(tuple(c + (target - c) * mix for c in to_rgb(hex_colour)))


def _styles(series: list[Series], shades: bool = True) -> dict[str, tuple[str, str, str]]:
    """label -> (colour, linestyle, marker): a colour per (encoding, scaling), a line style per variant of it
    and a marker per series. A variant's colour is a shade of its pair's, or (``shades=False``: series that are
    different methods, not variants) a colour of its own that nobody here has."""
    keys = list(dict.fromkeys((s.pe, s.scaling) for s in series))
    colours: dict[tuple[str, str], str] = {}
    for key in keys:  # first come keeps its own colour ...
        if colour(*key) not in colours.values():
            colours[key] = colour(*key)
    spare = (c for c in _POOL if c not in colours.values())
    for key in keys:  # ... and a pair that wants a taken one gets a spare nobody here wants
        colours.setdefault(key, next(spare, "#000000"))
    count = {key: sum((s.pe, s.scaling) == key for s in series) for key in keys}
    variants: dict[tuple[str, str], int] = {}
    out = {}
    for i, s in enumerate(series):
        key = (s.pe, s.scaling)
        n = variants[key] = variants.get(key, -1) + 1
        hue = colours[key] if n == 0 else shade(colours[key], n, count[key]) if shades else next(spare, "#000000")
        out[s.label] = (hue, _STYLES[n % len(_STYLES)], _MARKERS[i % len(_MARKERS)])
    return out


@dataclass(frozen=True)
class FigureOptions:
    """What a user may change on any figure: size in inches, title ("" for none), a matplotlib style name, the
    series' names (``--label``)."""

    figsize: tuple[float, float] | None = None
    title: str | None = None
    style: str | None = None
    renames: Renames | None = None

    def title_or(self, default: str) -> str:
        return default if self.title is None else self.title


def parse_figsize(text: str) -> tuple[float, float]:
    """``"7,4.2"`` -> (7.0, 4.2), inches."""
    try:
        w, h = (float(part) for part in str(text).split(","))
    except ValueError:
        w = h = math.nan
    if not (0 < w <= 100 and 0 < h <= 100):
        raise UserError(f"figsize '{text}' is not W,H in inches; give two numbers in (0, 100], e.g. 7,4.2")
    return w, h


def check_style(name: str) -> str:
    import matplotlib.style

    return choose("matplotlib style", name, [*matplotlib.style.available, "default"])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display
    import matplotlib.pyplot as plt

    return plt


def output_paths(out: str | Path, default_stem: str) -> list[Path]:
    """The files a figure goes to (see the module doc); checks the format and the directory before drawing, and
    creates nothing (a refused command leaves no directory behind; ``_save`` creates it)."""
    out = Path(out)
    if out.is_dir() or not out.suffix:
        stem, fmt = out / default_stem, "png"
    else:
        stem, fmt = out.with_suffix(""), out.suffix[1:].lower()
        if fmt not in FORMATS:
            raise UserError(f"cannot write a figure as '{out.suffix}' ({out}); name a .png (a .pdf is written "
                            "beside it), .pdf or .svg file")
    existing = next((p for p in (stem.parent, *stem.parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"cannot create output directory '{stem.parent}': '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output directory '{existing}' is not writable")
    return [stem.with_name(f"{stem.name}.{ext}") for ext in (("png", "pdf") if fmt == "png" else (fmt,))]


def _save(fig, paths: list[Path]) -> list[Path]:
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory '{paths[0].parent}': {exc.strerror or exc}") from None
    for path in paths:
        fmt = path.suffix[1:]
        # No creation date inside, so re-plotting unchanged results gives an identical file.
        meta = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
        # Through a temporary file of a unique name: a reader (LaTeX, a browser) never sees a half-written figure,
        # two plots at once never share one, and no link planted at a fixed name can redirect the write.
        atomic_write(path, lambda f, fmt=fmt, meta=meta: fig.savefig(f, format=fmt, dpi=DPI, bbox_inches="tight",
                                                                     metadata=meta))
    return paths


def render(build: Callable, out: str | Path, default_stem: str, opts: FigureOptions) -> list[Path]:
    """Check ``out``, then build the figure under the user's style and save it; returns the written paths."""
    import matplotlib.style

    paths = output_paths(out, default_stem)
    with matplotlib.style.context(opts.style or {}):  # the style must also hold while saving
        fig = build()
        try:
            return _save(fig, paths)
        finally:
            if fig.canvas.manager is not None:  # made by pyplot, which keeps it until closed
                _pyplot().close(fig)


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


# Mantissas for labelled ticks on a log axis, densest first; the first set giving at most _MAX_TICKS is used.
_NICE = ((1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 5, 6, 8), (1, 2, 3, 5), (1, 2, 5), (1, 3), (1,))
_MAX_TICKS = 9


def plain_log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis from lo to hi, as plain numbers a reader can read off (4, 6, 10, 20, 30, 100)."""
    from matplotlib.ticker import MaxNLocator

    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in _NICE:
        ticks = [m * 10.0**e for e in decades for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) <= _MAX_TICKS:
            break
    ticks = ticks[:: max(1, math.ceil(len(ticks) / _MAX_TICKS))]  # only (1,) left: every k-th decade
    if len(ticks) < 2:  # a narrow range (5.4 to 5.7): linear steps within it
        ticks = [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi]
    return ticks


def _label_log_axis(axis, lo: float, hi: float) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(FixedLocator(plain_log_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    axis.set_minor_locator(LogLocator(subs="all"))
    axis.set_minor_formatter(NullFormatter())  # minor ticks as marks only: the labels above are enough


def _draw_series(ax, s: Series, style: tuple[str, str, str], band: str) -> tuple[set[int], bool]:
    """One label's curve, its band and its end mark; returns the seed counts banded and whether it ends early."""
    c, ls, marker = style
    pts = [p for _, p in sorted(s.points.items()) if p.status == "ok"]
    if not pts:
        return set(), False
    xs = [p.eval_len for p in pts]
    # One point (learned positions, trained and evaluated at one length): a marker, in the legend too.
    ax.plot(xs, [p.mean for p in pts], color=c, linestyle=ls if len(pts) > 1 else "none", marker=marker,
            markersize=4 if len(pts) > 1 else 6, linewidth=1.6, label=s.label, zorder=3)
    banded = {p.n for p in pts if p.n > 1}
    if banded:
        lo = [p.min if band == "minmax" else max(p.mean - p.std, 1e-9) for p in pts]
        hi = [p.max if band == "minmax" else p.mean + p.std for p in pts]
        ax.fill_between(xs, lo, hi, color=c, alpha=0.18, linewidth=0, zorder=2)
    ends = any(p.status == "n/a" and p.eval_len > xs[-1] for p in s.points.values())
    if ends:  # the encoding cannot go further (learned positions end at max_len): say so
        ax.plot([xs[-1]], [pts[-1].mean], marker="x", color=c, markersize=9, mew=2, linestyle="none",
                label="_end", zorder=4)
    return banded, ends


def _legend_notes(band: str, seeds: set[int], ends: bool) -> list:
    """Legend entries that explain the shading and the end mark."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    notes = []
    if seeds:
        n = f"{min(seeds)}" if len(seeds) == 1 else f"{min(seeds)}–{max(seeds)}"
        what = "min–max" if band == "minmax" else "mean ± 1 std"
        notes.append(Patch(facecolor="0.5", alpha=0.3, label=f"shaded: {what} over {n} seeds"))
    if ends:
        notes.append(Line2D([], [], color="0.3", marker="x", mew=2, linestyle="none", label="cannot run longer"))
    return notes


def length_figure(paths: Iterable[str | Path], protocol: str = "nonoverlapping", band: str = "minmax",
                  opts: FigureOptions = FigureOptions(), relative: bool = False, split: str | None = None):
    """Build (not save) the perplexity-vs-length Figure; one legend entry per series. ``relative``: each run's
    perplexity divided by its own at the training length (curves start at 1)."""
    choose("band", band, BANDS)
    rows = select(load_results(paths, renames=opts.renames), protocol, split)
    warn_unequal_tokens(rows)
    value = "ppl_rel" if relative else "ppl"
    series = aggregate(relative_to_train_length(rows) if relative else rows, value)
    lengths = sorted({p.eval_len for s in series for p in s.points.values() if p.status == "ok"})
    if not lengths:
        raise UserError(f"no successful '{protocol}' evaluations to plot; every row has a non-ok status")
    train_lens = sorted({L for s in series for L in s.train_seq_lens})
    fig, ax = _pyplot().subplots(figsize=opts.figsize or (7.0, 4.6), layout="constrained")
    styles = _styles(series)
    seeds, ends = set(), False
    for s in series:
        banded, stops = _draw_series(ax, s, styles[s.label], band)
        seeds, ends = seeds | banded, ends or stops
    _train_lines(ax, train_lens)
    if relative:
        ax.axhline(1.0, color="0.5", linewidth=0.8, zorder=1)
    unit = units(rows)
    _length_axes(ax, lengths, unit, relative)
    rules = {r.get("stride_rule") for r in rows} - {None}
    how = f"sliding, stride {rules.pop()}" if protocol == "sliding" and len(rules) == 1 else protocol
    trained = f", trained at {train_lens[0]} {unit.length}" if len(train_lens) == 1 else ""
    ax.set_title(opts.title_or(f"Train short, test long ({how}{trained})"))
    handles, _ = ax.get_legend_handles_labels()
    legend_below(fig, handles + _legend_notes(band, seeds, ends), grow=opts.figsize is None)
    return fig


def _length_axes(ax, lengths: list[int], unit, relative: bool) -> None:
    """Log axes labelled with plain numbers, their unit and their scale."""
    _log2_ticks(ax, lengths)
    ax.set_yscale("log")
    _label_log_axis(ax.yaxis, *ax.get_ylim())
    ax.set_ylim(*ax.get_ylim())  # keep the range the ticks were chosen for
    ax.set_xlabel(unit.length_label())
    what = "perplexity ÷ perplexity at the training length" if relative else "perplexity"
    ax.set_ylabel(unit.value_label(what))
    ax.grid(True, which="major", alpha=0.3)


def plot_length(paths: Iterable[str | Path], out: str | Path, protocol: str = "nonoverlapping",
                band: str = "minmax", opts: FigureOptions = FigureOptions(), relative: bool = False,
                split: str | None = None) -> list[Path]:
    """Perplexity vs evaluation length; returns the written paths."""
    return render(lambda: length_figure(paths, protocol=protocol, band=band, opts=opts, relative=relative,
                                        split=split), out, "ppl_vs_length", opts)
