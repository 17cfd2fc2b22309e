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
from pathlib import Path

from omegaconf import OmegaConf

from ropebench.report.rows import read_rows
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


# Config keys the method and the budget already name (method_of, train.steps): not repeated as settings.
_NAMED = ("pe.", "train.steps", "train.seq_len", "train.pose_target_len", "train.pose_chunks", "init_from_seq_len")


def method_names(runs: list[Path]) -> dict[Path, str]:
    """Each run's method, with every other setting that tells it apart from the runs it is compared with (a
    learning rate, a model size: ``YaRN (lr=0.001)``), the way plots and tables label runs
    (``results.swept_keys``) -- so that runs differing in anything but the seed are never averaged as seeds of
    one method. Base runs are compared with base runs, extensions with extensions."""
    from ropebench.report.results import make_label, read_run, swept_keys

    configs = {run: RunDir(run).read_config() for run in runs}
    names = {}
    for base in (True, False):
        group = [run for run in runs if bool(configs[run].get("init_from")) != base]
        for run, keys in swept_keys([read_run(run) for run in group]).items():
            shown = [(key, value) for key, value in keys if not key.startswith(_NAMED)]
            names[run] = make_label(method_of(configs[run]), "none", shown)
    return names


def is_base(method: str) -> bool:
    return method.split(" (", 1)[0].endswith(BASE)


def _run_values(run: Path, method: str) -> tuple[str, dict[int, float], dict[int, float]]:
    """(steps, ppl by length, passkey accuracy by length) of one run, as trained."""
    cfg = RunDir(run).read_config()
    label = _as_trained_label(cfg)
    steps = "" if is_base(method) else str(int(cfg.train.steps))
    def rows(name: str, value: str) -> list[dict]:  # a text run has no passkey.csv, a passkey run no eval CSV
        return read_rows(run / name, ("eval_len", value)) if (run / name).is_file() else []

    ppl = {int(r["eval_len"]): float(r["ppl"]) for r in rows(EVAL_CSV, "ppl")
           if r.get("status") == "ok" and r.get("rope_scaling") == label and r.get("protocol") == "nonoverlapping"}
    passkey: dict[int, list[float]] = defaultdict(list)
    for r in rows(PASSKEY_CSV, "accuracy"):
        if r.get("status") == "ok" and r.get("rope_scaling") == label:
            passkey[int(r["eval_len"])].append(float(r["accuracy"]))
    return steps, ppl, {length: statistics.fmean(v) for length, v in passkey.items()}


def _stats(name: str, values: list[float]) -> dict:
    if not values:
        return {f"{name}_{s}": "" for s in ("mean", "std", "min", "max")} | {f"{name}_n": 0}
    return {f"{name}_n": len(values), f"{name}_mean": statistics.fmean(values),
            f"{name}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            f"{name}_min": min(values), f"{name}_max": max(values)}


def summary_rows(runs: list[Path]) -> list[dict]:
    """One row per (method, steps, length), aggregated over the runs (seeds) that have it."""
    found = {"ppl": defaultdict(list), "passkey": defaultdict(list)}
    names = method_names(runs)
    for run in runs:
        method = names[run]
        steps, by_len, pk = _run_values(run, method)
        for name, values in (("ppl", by_len), ("passkey", pk)):
            for length, value in values.items():
                found[name][(method, steps, length)].append(value)
    cells = sorted(set(found["ppl"]) | set(found["passkey"]), key=lambda key: _order(*key))
    return [{"method": m, "steps": st, "eval_len": n, **_stats("ppl", found["ppl"].get((m, st, n), [])),
             **_stats("passkey", found["passkey"].get((m, st, n), []))} for m, st, n in cells]


def _order(method: str, steps: str, length: int) -> tuple:
    return (not is_base(method), method, int(steps or -1), length)


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


def _figure(rows: list[dict], value: str):
    from ropebench.report.plot import _label_log_axis, _log2_ticks, _pyplot

    plt = _pyplot()
    rows = [r for r in rows if r[f"{value}_n"]]
    budgets = sorted({r["steps"] for r in rows if r["steps"]}, key=int)
    fig, axes = plt.subplots(1, max(1, len(budgets)), figsize=(4.2 * max(1, len(budgets)), 3.6), sharey=True,
                             squeeze=False)
    for ax, steps in zip(axes[0], budgets):
        for method in sorted({r["method"] for r in rows}):
            pts = [r for r in rows if r["method"] == method and (r["steps"] == steps or is_base(method))]
            if not pts or (is_base(method) and not method.startswith("rope")):
                continue
            style = "k--" if is_base(method) else "-o"
            xs = [r["eval_len"] for r in pts]
            ax.plot(xs, [r[f"{value}_mean"] for r in pts], style, label=method, markersize=3)
            ax.fill_between(xs, [r[f"{value}_min"] for r in pts], [r[f"{value}_max"] for r in pts], alpha=0.12)
        _log2_ticks(ax, sorted({r["eval_len"] for r in rows}))
        if value == "ppl":  # plain numbers on the log axis (20, 30, 50), not 5.4x10^1
            ax.set_yscale("log")
            low = min(r[f"{value}_min"] for r in rows)
            _label_log_axis(ax.yaxis, low, max(r[f"{value}_max"] for r in rows))
        ax.set_title(f"{steps} fine-tuning steps")
        ax.set_xlabel("evaluation length (tokens)")
    axes[0][0].set_ylabel(("perplexity" if value == "ppl" else "passkey accuracy") + " (mean, min–max over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_extend_report(sweep_dir: Path) -> list[Path]:
    """extend.csv, extend.md and the figure in ``sweep_dir``; returns what was written."""
    from ropebench.report.plot import FigureOptions, render

    rows = summary_rows(extension_runs(Path(sweep_dir)))
    if not rows:
        return []
    value = "ppl" if any(r["ppl_n"] for r in rows) else "passkey"
    tables = [markdown_table(rows, v) for v in VALUES if any(r[f"{v}_n"] for r in rows)]
    atomic_write_text(Path(sweep_dir) / "extend.csv", _csv_text(rows))
    atomic_write_text(Path(sweep_dir) / "extend.md", "\n".join(tables))
    figure = render(lambda: _figure(rows, value), Path(sweep_dir) / "extend.png", "extend", FigureOptions())
    return [Path(sweep_dir) / "extend.csv", Path(sweep_dir) / "extend.md", *figure]
