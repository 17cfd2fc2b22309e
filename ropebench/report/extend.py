"""The context-extension report (`ropebench sweep extend`): perplexity by method, fine-tuning budget and length,
and passkey effective context, aggregated over seeds.

Everything is read back from the run directories' own records: the method from each run's config (its RoPE
scaling, PoSE target, learned-table extension and encoding), the budget from ``train.steps``, the numbers from
``eval_length.csv`` / ``passkey.csv`` rows evaluated *as trained* (the run's own scaling). Base runs (no
``init_from``) are the reference rows. Writes ``extend.csv`` (one row per method, steps and length: n, mean,
std, min and max over seeds of the perplexity and of the passkey accuracy), ``extend.md`` (the tables) and
``extend.png``/``.pdf`` (one panel per budget: perplexity, or passkey accuracy for runs without text).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ropebench.report.identity import identity, labels
from ropebench.report.rows import read_rows
from ropebench.run.config import flatten_config
from ropebench.run.rundir import EVAL_CSV, PASSKEY_CSV, RunDir, atomic_write_text, job_dirs

SCALING_NAMES = {"linear": "PI", "ntk": "NTK", "dynamic": "dynamic NTK", "yarn": "YaRN"}
VALUES = ("ppl", "passkey")  # perplexity; passkey accuracy averaged over depths
COLUMNS = ("method", "steps", "eval_len", *(f"{v}_{s}" for v in VALUES for s in ("n", "mean", "std", "min", "max")))
BASE = "base"


def method_of(cfg) -> str:
    """A run's extension method, named from its config: 'PI', 'YaRN', 'PoSE+YaRN', 'direct', 'alibi direct',
    'learned interpolate', or '<pe> base' for a run that starts from nothing."""
    pe = str(cfg.pe.name)
    if not cfg.get("init_from"):
        return f"{pe} {BASE}"
    scaling = str(OmegaConf.select(cfg, "pe.scaling.type", default="none") or "none")
    parts = ["PoSE"] if cfg.train.get("pose_target_len") else []
    if scaling not in ("none", "default"):
        parts.append(SCALING_NAMES.get(scaling, scaling))
    if str(cfg.pe.get("extend", "none")) != "none":
        parts.append(str(cfg.pe.extend))
    name = "+".join(parts) or "direct"
    return name if pe == "rope" else f"{pe} {name}"


def _as_trained_label(cfg) -> str:
    from ropebench.core.rope.freqs import scaling_for_length
    from ropebench.eval.runner import AS_TRAINED, resolve_scaling

    train_len = int(cfg.train.seq_len)
    return scaling_for_length(resolve_scaling(cfg, AS_TRAINED), train_len, train_len)[1]["rope_scaling"]


def extension_runs(sweep_dir: Path) -> list[Path]:
    """The finished runs of an extension sweep and of its base sweep (SWEEP_DIR/base)."""
    found = [*job_dirs(sweep_dir), *job_dirs(Path(sweep_dir) / "base")]
    return [p for p in found if RunDir(p).is_finished()]


@dataclass
class RunResult:
    """One run's record as the report reads it: what it is (method, budget, encoding and trained scaling, config)
    and its numbers as trained (perplexity and passkey accuracy by length, and the perplexity rows themselves)."""

    run: Path
    method: str
    steps: str
    pe: str
    scaling: str
    config: dict
    ppl: dict[int, float]
    passkey: dict[int, float]
    rows: list[dict]


def _read(run: Path) -> RunResult:
    cfg = RunDir(run).read_config()
    label = _as_trained_label(cfg)
    method = method_of(cfg)
    steps = "" if method.endswith(BASE) else str(int(cfg.train.steps))

    def rows(name: str, value: str) -> list[dict]:  # a text run has no passkey.csv, a passkey run no eval CSV
        return read_rows(run / name, ("eval_len", value)) if (run / name).is_file() else []

    trained = [r for r in rows(EVAL_CSV, "ppl") if r.get("status") == "ok" and r.get("rope_scaling") == label
               and (r.get("protocol") or "nonoverlapping") == "nonoverlapping" and r.get("ppl") is not None]
    passkey: dict[int, list[float]] = defaultdict(list)
    for r in rows(PASSKEY_CSV, "accuracy"):
        if r.get("status") == "ok" and r.get("rope_scaling") == label:
            passkey[int(r["eval_len"])].append(float(r["accuracy"]))
    scaling = str(OmegaConf.select(cfg, "pe.scaling.type", default="none") or "none")
    flat = flatten_config(OmegaConf.to_container(cfg, resolve=False))
    return RunResult(run, method, steps, str(cfg.pe.name), scaling, flat,
                     {int(r["eval_len"]): float(r["ppl"]) for r in trained},
                     {length: statistics.fmean(v) for length, v in passkey.items()}, trained)


def _name_methods(results: list[RunResult]) -> None:
    """Each result's method, with the keys that tell it apart from another run of that method added (the same
    identity as every table and figure: two runs of one method that differ in anything but the seed and the
    budget are two rows, never averaged)."""
    def setup(r: RunResult) -> tuple:
        return (r.method, identity({k: v for k, v in r.config.items() if k != "train.steps"}))

    names = labels({setup(r): (r.pe, r.method, r.config) for r in results}, context=False)
    for r in results:
        r.method = names[setup(r)]


def read_results(runs: list[Path]) -> list[RunResult]:
    results = [_read(Path(run)) for run in runs]
    _name_methods(results)
    return results


def _stats(name: str, values: list[float]) -> dict:
    if not values:
        return {f"{name}_{s}": "" for s in ("mean", "std", "min", "max")} | {f"{name}_n": 0}
    return {f"{name}_n": len(values), f"{name}_mean": statistics.fmean(values),
            f"{name}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            f"{name}_min": min(values), f"{name}_max": max(values)}


def summary_rows(runs: list[Path] | list[RunResult]) -> list[dict]:
    """One row per (method, steps, length), aggregated over the runs (seeds) that have it."""
    results = runs if runs and isinstance(runs[0], RunResult) else read_results(runs)
    found = {"ppl": defaultdict(list), "passkey": defaultdict(list)}
    for r in results:
        for name, values in (("ppl", r.ppl), ("passkey", r.passkey)):
            for length, value in values.items():
                found[name][(r.method, r.steps, length)].append(value)
    cells = sorted(set(found["ppl"]) | set(found["passkey"]), key=lambda key: _order(*key))
    return [{"method": m, "steps": st, "eval_len": n, **_stats("ppl", found["ppl"].get((m, st, n), [])),
             **_stats("passkey", found["passkey"].get((m, st, n), []))} for m, st, n in cells]


# Methods in the order a reader compares them: no change, then interpolation, base changes, YaRN, PoSE.
METHOD_ORDER = ("direct", "PI", "NTK", "dynamic NTK", "YaRN", "PoSE", "PoSE+PI", "PoSE+NTK", "PoSE+YaRN")


def _order(method: str, steps: str, length: int) -> tuple:
    """Base runs first; then RoPE's methods in METHOD_ORDER, other encodings' after them; budgets, lengths."""
    name = method.split(" (")[0]  # "YaRN (lr=0.001)" sorts as YaRN
    rank = METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)
    return (not is_base(method), rank, method, int(steps or -1), length)


def is_base(method: str) -> bool:
    """A base run's method, named or with the settings that tell it apart ("rope base (lr=0.001)")."""
    return method.split(" (", 1)[0].endswith(BASE)


def _csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def markdown_table(rows: list[dict], value: str = "ppl") -> str:
    """Methods x budgets down, lengths across: mean ± std over seeds of the perplexity, or of the passkey
    accuracy (in %, averaged over depths)."""
    rows = [r for r in rows if r[f"{value}_n"]]
    lengths = sorted({r["eval_len"] for r in rows})
    cells: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    scale, digits = (100, 0) if value == "passkey" else (1, 2)
    for r in rows:
        spread = f" ± {scale * r[f'{value}_std']:.{digits}f}" if r[f"{value}_n"] > 1 else ""
        cells[(r["method"], r["steps"])][r["eval_len"]] = f"{scale * r[f'{value}_mean']:.{digits}f}{spread}"
    lines = ["| method | steps | " + " | ".join(map(str, lengths)) + " |", "|---|---:|" + "---:|" * len(lengths)]
    for (method, steps), by_len in sorted(cells.items(), key=lambda kv: _order(*kv[0], 0)):
        lines.append(f"| {method} | {steps or '–'} | " + " | ".join(by_len.get(n, "n/a") for n in lengths) + " |")
    return "\n".join(lines) + "\n"


def _figure(rows: list[dict], value: str, families: dict[str, tuple[str, str]], unit):
    """One panel per budget, the reference (runs before any fine-tuning) dashed in black in every panel. Each
    method keeps one colour and marker in every panel (a method missing at one budget leaves a gap, it never
    shifts the others' colours), and one legend below the panels names them all."""
    from ropebench.report.axes import legend_below
    from ropebench.report.plot import _STYLES, _label_log_axis, _legend_notes, _log2_ticks, _pyplot, _styles
    from ropebench.report.results import Series

    rows = [r for r in rows if r[f"{value}_n"]]
    budgets = sorted({r["steps"] for r in rows if r["steps"]}, key=int) or [""]
    bases = sorted({r["method"] for r in rows if not r["steps"]}, key=lambda b: (not b.startswith("rope"), b))
    methods = sorted({r["method"] for r in rows if r["steps"]}, key=lambda m: _order(m, "0", 0))
    family = {m: families.get(m, (m, "none")) for m in methods}  # (encoding, trained scaling): the colour
    # Distinct colours, not shades: PoSE+YaRN is another method than YaRN, not a variant of it.
    styles = _styles([Series(m, family[m][0], [], [], {}, family[m][1]) for m in methods], shades=False)
    greys = ("0.0", "0.4", "0.6")
    styles.update({b: (greys[i % 3], _STYLES[1 + i % 3], "x") for i, b in enumerate(bases)})
    fig, axes = _pyplot().subplots(1, len(budgets), figsize=(4.0 * len(budgets), 3.6), sharey=True,
                                   squeeze=False, layout="constrained")
    handles, seeds = {}, set()
    for ax, steps in zip(axes[0], budgets):
        for method in [*bases, *methods]:
            pts = [r for r in rows if r["method"] == method and r["steps"] in ("", steps)]
            if pts:
                handles[method], banded = _draw(ax, pts, value, styles[method], method)
                seeds |= banded
        _log2_ticks(ax, sorted({r["eval_len"] for r in rows}))
        ax.set_title(f"{steps} fine-tuning steps" if steps else "before fine-tuning")
        ax.set_xlabel(unit.length_label())
        ax.grid(True, which="major", alpha=0.3)
    if value == "ppl":  # plain numbers on the log axis (20, 30, 50), not 5.4x10^1
        axes[0][0].set_yscale("log")
        _label_log_axis(axes[0][0].yaxis, min(r["ppl_min"] for r in rows), max(r["ppl_max"] for r in rows))
    axes[0][0].set_ylabel(unit.value_label("perplexity") if value == "ppl" else "passkey accuracy (mean over depths)")
    legend_below(fig, [handles[m] for m in [*bases, *methods] if m in handles] + _legend_notes("minmax", seeds, False))
    return fig


def _draw(ax, pts: list[dict], value: str, style: tuple[str, str, str], label: str):
    """One method's curve at one budget and its band over seeds; returns its legend handle and the seed counts."""
    colour, linestyle, marker = style
    xs = [r["eval_len"] for r in pts]
    (line,) = ax.plot(xs, [r[f"{value}_mean"] for r in pts], color=colour, linestyle=linestyle, marker=marker,
                      markersize=3.5, linewidth=1.4, label=label)
    if any(r[f"{value}_n"] > 1 for r in pts):
        ax.fill_between(xs, [r[f"{value}_min"] for r in pts], [r[f"{value}_max"] for r in pts], color=colour,
                        alpha=0.12, linewidth=0)
    return line, {r[f"{value}_n"] for r in pts if r[f"{value}_n"] > 1}


def _token_warnings(results: list[RunResult]) -> list[str]:
    """Where the report's runs scored different tokens (table and plot warn the same way)."""
    from ropebench.report.tokens import unequal_token_warnings

    rows = [{**r, "label": f"{res.method} ({res.steps or 'no'} fine-tuning steps)", "run_dir": res.run,
             "train_seq_len": int(res.config.get("train.seq_len") or 0)} for res in results for r in res.rows]
    return unequal_token_warnings(rows)


def write_extend_report(sweep_dir: Path) -> list[Path]:
    """extend.csv, extend.md and the figure in ``sweep_dir``; returns what was written."""
    import sys

    from ropebench.report.axes import units
    from ropebench.report.plot import FigureOptions, render

    results = read_results(extension_runs(Path(sweep_dir)))
    rows = summary_rows(results)
    if not rows:
        return []
    warnings = _token_warnings(results)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    value = "ppl" if any(r["ppl_n"] for r in rows) else "passkey"
    unit = units([row for r in results for row in r.rows])
    tables = [_caption(v, unit) + markdown_table(rows, v) for v in VALUES if any(r[f"{v}_n"] for r in rows)]
    atomic_write_text(Path(sweep_dir) / "extend.csv", _csv_text(rows))
    atomic_write_text(Path(sweep_dir) / "extend.md", "".join(f"> warning: {w}\n\n" for w in warnings)
                      + "\n".join(tables))
    families = {r.method: (r.pe, r.scaling) for r in results}
    figure = render(lambda: _figure(rows, value, families, unit), Path(sweep_dir) / "extend.png", "extend",
                    FigureOptions())
    return [Path(sweep_dir) / "extend.csv", Path(sweep_dir) / "extend.md", *figure]


def _caption(value: str, unit) -> str:
    if value == "ppl":
        return (f"Perplexity {unit.per} by evaluation length ({unit.length}), as each run was trained: mean ± std "
                "over seeds.\n\n")
    return "Passkey accuracy (%, mean over key depths) by evaluation length: mean ± std over seeds.\n\n"
