"""Task results (``eval_task.csv``): exact match against instance length per task -- a figure with one panel per
task (a line per label, the band over seeds, the training range shaded) and a table per task with the mean rank
of the labels across tasks.

Runs are grouped by task; within a task a run's label is its encoding plus the config keys that tell it from the
other runs of that task (``train.random_positions=256`` for randomized positions). A bucket the encoding cannot
represent (learned positions past their table) counts as 0 for the summaries and the rank: the model cannot
answer there. Only the tasks every label learns inside the training range (mean exact match >= LEARNED) are
ranked: beyond-range accuracy of a task the model never learned says nothing about length generalization.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.eval.cells import finite_float
from ropebench.report.plot import FigureOptions, _pyplot, _styles, render
from ropebench.report.results import Point, Series, input_dir, label_rows, read_run, series_sort_key
from ropebench.report.rows import int_or_none, read_rows
from ropebench.report.table import FORMATS, render_table
from ropebench.run.rundir import TASK_CSV, runs_below

REQUIRED = ("eval_len", "exact_match")
# The in-range exact match at which a task counts as learned: the bar the task sweep's budget is chosen to meet.
LEARNED = 0.95
VALUES = ("exact_match", "token_accuracy")


@dataclass
class TaskSeries:
    """One label on one task: a Point per bucket (LO, HI), aggregated over seeds."""

    task: str
    label: str
    pe: str
    scaling: str
    train_len: int
    points: dict[tuple[int, int], Point] = field(default_factory=dict)

    def summary(self, inside: bool) -> float | None:
        """Mean over the buckets inside the training range (HI <= L), or beyond it (LO > L); n/a counts 0."""
        picked = [p for (lo, hi), p in self.points.items() if (hi <= self.train_len if inside else lo > self.train_len)]
        values = [p.mean if p.status == "ok" else 0.0 for p in picked if p.status in ("ok", "n/a")]
        return statistics.fmean(values) if values else None


def find_task_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories with an eval_task.csv: given directly, as the CSV itself, or one or two levels down."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = input_dir(raw, TASK_CSV)
        runs = [path] if (path / TASK_CSV).is_file() else runs_below(path, lambda p: (p / TASK_CSV).is_file())
        if not runs:
            raise UserError(f"path '{raw}' holds no {TASK_CSV}; run `ropebench eval-task RUN_DIR` first")
        for run in runs:
            found[run.resolve()] = None
    return list(found)


def _parse(row: dict) -> dict:
    for key in ("len_min", "task_len"):
        row[key] = int_or_none(row.get(key))
    row["len_min"] = row["len_min"] or row["eval_len"]
    for key in VALUES:
        row[key] = finite_float(row.get(key))
    return row


def load_task_rows(paths: Iterable[str | Path]) -> list[dict]:
    """Every run's rows with ``run_dir``, ``seed`` and ``label`` (labels computed among the runs of one task)."""
    tables = {p: [_parse(r) for r in read_rows(p / TASK_CSV, REQUIRED, value="exact_match")]
              for p in find_task_runs(paths)}
    runs = [read_run(p, (rows or [None])[0]) for p, rows in tables.items()]
    out = []
    for task in sorted({r["task"] for rows in tables.values() for r in rows}):
        group = [run for run in runs if any(r["task"] == task for r in tables[run.run_dir])]
        of_task = {run.run_dir: [r for r in tables[run.run_dir] if r["task"] == task] for run in group}
        label_rows(group, of_task)
        for run in group:
            for row in of_task[run.run_dir]:
                row.update(run_dir=run.run_dir, seed=run.seed, pe=run.pe)
                out.append(row)
    if not any(r["status"] == "ok" for r in out):
        raise UserError("no successful task evaluations; every row has a non-ok status")
    return out


def bin_width(train_len: int) -> int:
    """The table's column width in lengths: the largest divisor of L up to L/2 (L = 6: 1-3, 4-6, 7-9, ...), so
    that no column straddles the end of the training range."""
    return max((w for w in range(1, train_len // 2 + 1) if train_len % w == 0), default=1)


def bin_rows(rows: list[dict], value: str = "exact_match") -> list[dict]:
    """Rows of single lengths (the default buckets) averaged per run into columns of ``bin_width`` lengths; rows of
    wider buckets are kept. A column is measured when every length in it is; not applicable when any is."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        width = bin_width(int(r["task_len"] or 1)) if r["len_min"] == r["eval_len"] else 0
        lo, hi = ((r["eval_len"] - 1) // width * width + 1, ((r["eval_len"] - 1) // width + 1) * width) if width \
            else (r["len_min"], r["eval_len"])
        groups.setdefault((r["task"], r["label"], r["run_dir"], lo, hi), []).append(r)
    out = []
    for (_, _, _, lo, hi), group in groups.items():
        # A length without test instances (parity of 1 bit, perhaps) measured nothing: the others speak for the column.
        group = [g for g in group if not g["status"].startswith("no_instances")] or group
        row = {**group[-1], "len_min": lo, "eval_len": hi}
        if all(g["status"] == "ok" and g[value] is not None for g in group):
            row.update(status="ok", **{value: statistics.fmean(g[value] for g in group)})
        else:
            bad = [g["status"] for g in group if g["status"] != "ok"]
            row.update(status=next((b for b in bad if b.startswith("not_applicable")), bad[0] if bad else "missing"),
                       **{value: None})
        out.append(row)
    return out


def _point(hi: int, rows: list[dict], value: str) -> Point:
    values = [r[value] for r in rows if r["status"] == "ok" and r[value] is not None]
    if values:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return Point(hi, len(values), statistics.fmean(values), std, min(values), max(values), "ok")
    return Point(hi, status="n/a" if any(r["status"].startswith("not_applicable") for r in rows) else "missing")


def task_series(rows: list[dict], value: str = "exact_match") -> dict[str, list[TaskSeries]]:
    """task -> its labels' series, in the figures' encoding order. A run that wrote a bucket twice counts once."""
    choose("task value", value, VALUES)
    latest = {(r["task"], r["label"], r["run_dir"], r["len_min"], r["eval_len"]): r for r in rows}
    grouped: dict[tuple[str, str], dict[tuple[int, int], list[dict]]] = {}
    for (task, label, _, lo, hi), r in latest.items():
        grouped.setdefault((task, label), {}).setdefault((lo, hi), []).append(r)
    out: dict[str, list[TaskSeries]] = {}
    for (task, label), buckets in grouped.items():
        first = next(iter(buckets.values()))[0]
        series = TaskSeries(task, label, first["pe"], first["rope_scaling"], int(first["task_len"] or 0))
        series.points = {b: _point(b[1], rs, value) for b, rs in sorted(buckets.items(), key=lambda kv: kv[0][::-1])}
        out.setdefault(task, []).append(series)
    return {task: sorted(s, key=lambda x: series_sort_key(_as_series(x))) for task, s in sorted(out.items())}


def _as_series(s: TaskSeries) -> Series:
    return Series(s.label, s.pe, [], [], {}, s.scaling)


def learned_by_all(series: list[TaskSeries]) -> bool:
    """Whether every label learned the task: its mean inside the training range of the table's value (exact match
    in ``ropebench table --task``) is >= LEARNED."""
    return all((s.summary(inside=True) or 0.0) >= LEARNED for s in series)


def mean_ranks(by_task: dict[str, list[TaskSeries]]) -> list[tuple[str, float, int]]:
    """(label, mean rank, tasks ranked on) by exact match beyond the training range over the tasks every label
    learned (``learned_by_all``), best first; a tie shares the mean of the ranks it spans (rank 1 is the best)."""
    ranks: dict[str, list[float]] = {}
    for series in (s for s in by_task.values() if learned_by_all(s)):
        scored = [(s.label, s.summary(inside=False)) for s in series if s.summary(inside=False) is not None]
        for label, score in scored:
            better = sum(1 for _, other in scored if other > score)
            tied = sum(1 for _, other in scored if other == score)
            ranks.setdefault(label, []).append(better + (tied + 1) / 2)
    return sorted(((label, statistics.fmean(r), len(r)) for label, r in ranks.items()), key=lambda t: t[1])


def _cell(point: Point | None) -> str:
    if point is None or point.status == "missing":
        return "—"
    if point.status == "n/a":
        return "n/a"
    return f"{point.mean:.2f} ± {point.std:.2f}" if point.n > 1 else f"{point.mean:.2f}"


def _bucket_name(lo: int, hi: int) -> str:
    return str(hi) if lo == hi else f"{lo}-{hi}"


def _summary_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _title(fmt: str, text: str) -> str:
    return {"md": f"### {text}\n\n", "csv": f"# {text}\n", "latex": f"% {text}\n"}[fmt]


def task_table(paths: Iterable[str | Path], fmt: str = "md", value: str = "exact_match") -> str:
    """Per task: labels by bucket (mean ± std over seeds), the mean inside the training range and beyond it; then
    the mean rank of each label across tasks."""
    choose("table format", fmt, FORMATS)
    by_task = task_series(bin_rows(load_task_rows(paths), value), value)
    blocks = []
    for task, series in by_task.items():
        buckets = sorted({b for s in series for b in s.points}, key=lambda b: b[::-1])
        train_len = max(s.train_len for s in series)
        cols = [*(_bucket_name(*b) for b in buckets), f"<= {train_len}", f"> {train_len}"]
        rows = [(s.label, [*(_cell(s.points.get(b)) for b in buckets), _summary_cell(s.summary(inside=True)),
                           _summary_cell(s.summary(inside=False))]) for s in series]
        title = f"{task}: {value.replace('_', ' ')} by instance length (trained on 1-{train_len})"
        blocks.append(_title(fmt, title) + render_table(fmt, cols, rows, title, best=max))
    ranks = [(label, [f"{rank:.2f}", str(n)]) for label, rank, n in mean_ranks(by_task)]
    unlearned = [task for task, series in by_task.items() if not learned_by_all(series)]
    skipped = f"; not ranked, not learned by every label inside its range: {', '.join(unlearned)}" if unlearned else ""
    title = f"mean rank across tasks (exact match beyond the training range; 1 is best{skipped})"
    body = render_table(fmt, ["mean rank", "tasks"], ranks, title, best=None) if ranks else "no task to rank\n"
    blocks.append(_title(fmt, title) + body)
    return "\n".join(blocks)


def _draw(ax, series: TaskSeries, style: tuple[str, str, str], band: str) -> None:
    colour, linestyle, marker = style
    points = [((lo + hi) / 2, p) for (lo, hi), p in series.points.items() if p.status == "ok"]
    if not points:
        return
    xs, ys = [x for x, _ in points], [p.mean for _, p in points]
    ax.plot(xs, ys, color=colour, linestyle=linestyle, marker=marker, markersize=3.5, linewidth=1.4,
            label=series.label)
    if any(p.n > 1 for _, p in points):
        lo = [p.min if band == "minmax" else max(p.mean - p.std, 0.0) for _, p in points]
        hi = [p.max if band == "minmax" else min(p.mean + p.std, 1.0) for _, p in points]
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, linewidth=0)


def task_figure(paths: Iterable[str | Path], value: str = "exact_match", band: str = "minmax",
                opts: FigureOptions = FigureOptions()):
    """Build (not save) the accuracy-vs-instance-length figure, one panel per task."""
    choose("band", band, ("minmax", "std"))
    by_task = task_series(load_task_rows(paths), value)
    plt = _pyplot()
    cols = min(len(by_task), 3)
    nrows = math.ceil(len(by_task) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=opts.figsize or (4.2 * cols, 3.2 * nrows), squeeze=False,
                             layout="constrained")
    styles = _styles(sorted({s.label: _as_series(s) for ss in by_task.values() for s in ss}.values(),
                            key=series_sort_key))
    for ax, (task, series) in zip(axes.flat, by_task.items()):
        train_len = max(s.train_len for s in series)
        ax.axvspan(0.5, train_len + 0.5, color="0.9", zorder=0, label="_training range")
        for s in series:
            _draw(ax, s, styles[s.label], band)
        ax.set_title(f"{task} (trained on 1-{train_len})", fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("instance length")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(by_task):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(value.replace("_", " "))
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
               frameon=False, fontsize=8)
    what = "min–max" if band == "minmax" else "mean ± 1 std"
    if title := opts.title_or(f"Tasks: grey = training range; bands = {what} over seeds"):
        fig.suptitle(title, fontsize=10)
    return fig


def plot_tasks(paths: Iterable[str | Path], out: str | Path, value: str = "exact_match", band: str = "minmax",
               opts: FigureOptions = FigureOptions()) -> list[Path]:
    """Accuracy vs instance length per task; returns the written paths (see ropebench.report.plot)."""
    return render(lambda: task_figure(paths, value, band, opts), out, "tasks", opts)
