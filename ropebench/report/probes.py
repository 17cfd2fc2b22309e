"""The retrieval probes' figure and table, from each run's probe.csv (``ropebench.eval.probes``).

* Figure: likelihood accuracy by evaluation length (x) and needle depth (y), one heatmap per run label and task
  (the passkey figure's machinery, ``report.plot_passkey``), each titled with its chance level 1/K.
* Table: accuracy averaged over depths, mean ± std over seeds (runs sharing a label), by label and task down and
  length across, with each task's chance level beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ropebench.data.probes import TASKS
from ropebench.errors import UserError
from ropebench.eval.cells import finite_float
from ropebench.report.plot import FigureOptions, render
from ropebench.report.plot_passkey import _trials, heatmap, heatmap_figure, load_panels
from ropebench.report.results import aggregate
from ropebench.report.table import _lengths, cell, format_table
from ropebench.run.rundir import PROBE_CSV

REQUIRED = ("task", "eval_len", "depth", "accuracy")
COLOUR_LABEL = "likelihood accuracy (the answer ranks first of K)"


def load_probes(paths: Iterable[str | Path], task: str | None = None,
                renames=None) -> dict[tuple[str, str], list[dict]]:
    """(label, task) -> rows (accuracy None where not measured): labels in first-seen order, tasks in the
    registry's order; only ``task`` when given; ``renames``: the user's names for series."""
    panels = load_panels(paths, PROBE_CSV, REQUIRED, "probe", panel=lambda label, row: (label, row["task"]),
                         renames=renames)
    have = {name for _, name in panels}
    if task is not None and task not in have:
        raise UserError(f"no probe results for task '{task}'; the runs have: {', '.join(sorted(have))}")
    order = {name: i for i, name in enumerate(TASKS)}
    labels = list(dict.fromkeys(label for label, _ in panels))
    keys = sorted((key for key in panels if task in (None, key[1])),
                  key=lambda key: (labels.index(key[0]), order.get(key[1], len(order)), key[1]))
    return {key: panels[key] for key in keys}


def chance(rows: list[dict]) -> str:
    """The rows' chance level: ``0.125`` (K = 8), or the range when runs used different K."""
    levels = sorted({value for r in rows if (value := finite_float(r.get("chance"))) is not None})
    if not levels:
        return "?"
    return f"{levels[0]:.3f}" if len(levels) == 1 else f"{levels[0]:.3f}–{levels[-1]:.3f}"


def _draw(ax, image_kw: dict, key: tuple[str, str], rows: list[dict]):
    image, *_ = heatmap(ax, image_kw, rows)
    ax.set_title(f"{key[0]} · {key[1]}\n{_trials(rows)}, chance {chance(rows)}", fontsize=9)
    return image


def probe_figure(paths: Iterable[str | Path], task: str | None = None, opts: FigureOptions = FigureOptions()):
    """Build (not save) the heatmap Figure: a row per label, a column per task when every label has every task."""
    panels = load_probes(paths, task, opts.renames)
    tasks = {name for _, name in panels}
    labels = {label for label, _ in panels}
    per_row = len(tasks) if len(panels) == len(tasks) * len(labels) and len(tasks) > 1 else 3
    return heatmap_figure(panels, _draw, "needle depth", COLOUR_LABEL, opts.title_or("Retrieval probes"), opts,
                          per_row)


def plot_probes(paths: Iterable[str | Path], out: str | Path, task: str | None = None,
                opts: FigureOptions = FigureOptions()) -> list[Path]:
    """The probes' heatmaps; returns the written paths (see ropebench.report.plot for the formats)."""
    return render(lambda: probe_figure(paths, task, opts), out, "probes", opts)


def _depth_means(label: str, rows: list[dict]) -> list[dict]:
    """One row per run and length: the accuracy averaged over depths (None unless every depth succeeded)."""
    by_run: dict[tuple, list[dict]] = {}
    for r in rows:
        by_run.setdefault((r["run_dir"], r["eval_len"]), []).append(r)
    out = []
    for (_, length), group in by_run.items():
        accs = [r["accuracy"] for r in group]
        done = all(a is not None for a in accs)
        status = "ok" if done else next((r["status"] for r in group if r["status"] != "ok"), "missing")
        out.append({**group[0], "label": label, "eval_len": length, "status": status,
                    "accuracy": sum(accs) / len(accs) if done else None})
    return out


def probe_table(paths: Iterable[str | Path], lengths: Sequence | None = None, fmt: str = "md",
                task: str | None = None, renames=None) -> str:
    """Rows: run labels by task (with the task's chance level); columns: evaluation lengths; cells: the accuracy
    averaged over depths, mean ± std over seeds; ``renames``: the user's names for series."""
    panels = load_probes(paths, task, renames)
    out = []
    for name in dict.fromkeys(t for _, t in panels):
        keys = [key for key in panels if key[1] == name]
        series = aggregate([r for key in keys for r in _depth_means(key[0], panels[key])], value="accuracy")
        out += [(s, name, chance(panels[(s.label, name)])) for s in series]
    cols = _lengths(lengths, (n for s, _, _ in out for n in s.points))
    rows = [(s.label, [name, level, *(cell(s.points.get(n)) for n in cols)]) for s, name, level in out]
    return format_table(["task", "chance", *cols], rows, fmt)
