"""Read finished run directories and aggregate their length-generalisation results.

A run directory holds ``config.yaml`` and ``eval_length.csv`` (and optionally ``eval_positions.csv``);
a sweep directory holds run directories one or two levels down. Everything here is stdlib + OmegaConf so
the plotting and table code can be tested without torch.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.report.rows import int_or_none, read_rows
from ropebench.run.config import flatten_config
from ropebench.run.rundir import RunDir, runs_below

LENGTH_CSV = "eval_length.csv"
POSITIONS_CSV = "eval_positions.csv"
PROTOCOLS = ("nonoverlapping", "sliding")

# Encodings in the order the paper's figures list them; unknown names sort after these, alphabetically.
ENCODING_ORDER = ("sinusoidal", "learned", "rope", "xpos", "t5", "alibi", "kerple", "fire", "nope")

# Config keys that never change what a model learned (bookkeeping, hardware, logging, evaluation settings
# that the CSV rows already carry), so two runs differing only in them are the same experiment.
_IGNORED = (
    "seed",
    "resume",
    "init_from",  # where the weights came from: a path per seed; the method is in the other keys
    "sweep_name",
    "label",  # the run's name: it replaces the encoding's in the label
    "logger",
    "eval",
    "data.cache_dir",
    "train.device",
    "train.threads",
    "train.compile",
    "train.log_interval",
    "train.eval_interval",
    "train.ckpt_interval",
    "train.eval_batches",
)
_SHORT = {"train.seq_len": "L"}


@dataclass
class Run:
    run_dir: Path
    pe: str
    seed: int | None
    train_seq_len: int | None
    config: dict[str, object] = field(default_factory=dict)  # flattened: "pe.base" -> 10000.0


@dataclass
class Point:
    """One label at one evaluation length, aggregated over seeds (``n`` successful values)."""

    eval_len: int
    n: int = 0
    mean: float = math.nan
    std: float = 0.0
    min: float = math.nan
    max: float = math.nan
    # "ok" when n > 0; "n/a" when the encoding cannot run at this length; "missing" otherwise.
    status: str = "missing"


@dataclass
class Series:
    label: str
    pe: str
    train_seq_lens: list[int]
    seeds: list[int]
    points: dict[int, Point]
    scaling: str = "none"  # the rows' rope_scaling: with pe, what picks the colour


def _is_run_dir(path: Path) -> bool:
    return (path / LENGTH_CSV).is_file()


def input_dir(raw: str | Path, csv_name: str) -> Path:
    """The directory a command-line path names: the path itself, or the run directory of a ``csv_name`` file."""
    path = Path(raw)
    if not path.exists():
        raise UserError(f"path '{raw}' does not exist; expected a run directory or a sweep directory")
    if path.is_file() and path.name == csv_name:
        path = path.parent
    if not path.is_dir():
        raise UserError(f"path '{raw}' is a file; expected a run directory or a sweep directory")
    return path


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Evaluated run directories under ``paths`` (run dirs, sweep dirs, or eval_length.csv files)."""
    found: dict[Path, None] = {}  # dict keeps first-seen order and drops duplicates
    for raw in paths:
        path = input_dir(raw, LENGTH_CSV)
        if _is_run_dir(path):
            found[path.resolve()] = None
            continue
        runs = runs_below(path, _is_run_dir)  # one level down, or two (sweeps/<name>/<timestamp>/<run>)
        if not runs:
            what = (
                "has no eval_length.csv; evaluate it first"
                if RunDir(path).has_config()
                else (
                    f"holds no evaluated run; expected a run directory with {LENGTH_CSV} "
                    "or a sweep directory whose runs have one"
                )
            )
            raise UserError(f"path '{raw}' {what}")
        for run in runs:
            found[run.resolve()] = None
    return list(found)


def _flatten(node) -> dict[str, object]:
    """The run's config flattened, lists as tuples and empty sections as None: hashable, so values can be compared
    and used as keys."""
    return {key: tuple(v) if isinstance(v, list) else None if v == {} else v
            for key, v in flatten_config(node).items()}


def read_run(run_dir: Path, first_row: dict[str, str] | None = None) -> Run:
    """The run's metadata from its config, falling back to the CSV's columns when the config is absent."""
    config: dict[str, object] = {}
    cfg_path = RunDir(run_dir).config_path()
    if cfg_path.is_file():
        from omegaconf import OmegaConf

        try:
            # Older runs kept Hydra's unresolved copy: keep interpolations as text rather than resolving env vars.
            config = _flatten(OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False))
        except Exception as exc:  # a corrupt YAML is the user's file to fix
            raise UserError(f"cannot read '{cfg_path}': {exc}".splitlines()[0]) from exc
    row = first_row or {}
    pe = str(config.get("label") or config.get("pe.name") or row.get("pe") or "unknown")
    seq_len = int_or_none(config.get("train.seq_len", row.get("train_seq_len")))
    return Run(run_dir, pe, int_or_none(config.get("seed")), seq_len, config)


def swept_keys(runs: list[Run]) -> dict[Path, list[tuple[str, object]]]:
    """Per run, the config keys (and values) that distinguish it from the other runs, seed excluded.

    Non-encoding keys (train.seq_len, model.*) are compared across all runs; ``pe.*`` keys only among runs of
    the same encoding, since ALiBi has no ``pe.base`` to differ from RoPE's. A key counts only when every
    compared run has it, so runs from an older config schema do not sprout spurious labels.
    """

    def differing(group: list[Run], keep) -> list[str]:
        if len(group) < 2:
            return []
        common = set.intersection(*(set(r.config) for r in group))
        keys = [k for k in common if keep(k) and not any(k == i or k.startswith(i + ".") for i in _IGNORED)]
        return sorted(k for k in keys if len({repr(r.config[k]) for r in group}) > 1)

    global_keys = differing(runs, lambda k: not k.startswith("pe."))
    result: dict[Path, list[tuple[str, object]]] = {}
    for pe in {r.pe for r in runs}:
        group = [r for r in runs if r.pe == pe]
        pe_keys = differing(group, lambda k: k.startswith("pe.") and k != "pe.name")
        # A run named by its `label` (conf/method/) is told apart by the keys that differ among its namesakes.
        own = differing(group, lambda k: not k.startswith("pe.")) if group[0].config.get("label") else global_keys
        for run in group:
            result[run.run_dir] = [(k, run.config[k]) for k in own + pe_keys]
    return result


def _short(key: str) -> str:
    if key in _SHORT:
        return _SHORT[key]
    parts = key.split(".")
    # "model.name" reads better as "model=small" than "name=small".
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def make_label(pe: str, rope_scaling: str = "none", swept: list[tuple[str, object]] = (),
               logit_scale: str = "none") -> str:
    """``rope``, ``rope+yarn``, ``rope+yarn+logn``, ``rope (L=128, base=500000)``: encoding, scaling, logit scale,
    distinguishing keys."""
    label = pe if rope_scaling in ("", "none") else f"{pe}+{rope_scaling}"
    label += "" if logit_scale in ("", "none") else f"+{logit_scale}"
    parts = [f"{_short(k)}={v:g}" if isinstance(v, float) else f"{_short(k)}={v}" for k, v in swept]
    if len(parts) > 3:  # runs from unrelated setups: keep the legend readable (the tables keep every key)
        parts = [*parts[:3], "…"]
    return f"{label} ({', '.join(parts)})" if parts else label


# Columns a results file must have to be read at all, and the column that must hold a number on a row with
# status ok; rows that fail either are damage, skipped by read_rows.
REQUIRED = {LENGTH_CSV: ("eval_len", "ppl"), POSITIONS_CSV: ("eval_len", "position_start", "position_end", "mean_nll")}
_VALUE = {LENGTH_CSV: "ppl", POSITIONS_CSV: "mean_nll"}


def _read_table(run_dir: Path, name: str) -> list[dict]:
    return read_rows(run_dir / name, REQUIRED.get(name, ()), _VALUE.get(name))


def load_results(paths: Iterable[str | Path], filename: str = LENGTH_CSV) -> list[dict]:
    """Rows of every run's ``filename`` joined with run metadata: run_dir, pe, seed, train_seq_len, label.

    Numeric columns come back as numbers (ppl/nll None when the row did not succeed); ``label`` combines the
    encoding, the row's rope_scaling and the config keys that differ between the runs (see swept_keys).
    """
    run_dirs = find_runs(paths)
    tables = {d: _read_table(d, LENGTH_CSV) for d in run_dirs}
    runs = [read_run(d, (tables[d] or [None])[0]) for d in run_dirs]
    swept = swept_keys(runs)
    rows: list[dict] = []
    for run in runs:
        if filename == LENGTH_CSV:
            table = tables[run.run_dir]
        else:
            table = _read_table(run.run_dir, filename) if (run.run_dir / filename).is_file() else []
        for row in table:
            row["protocol"] = (row.get("protocol") or "nonoverlapping").strip()
            row.update(
                run_dir=run.run_dir,
                pe=run.pe,
                seed=run.seed,
                train_seq_len=run.train_seq_len or row.get("train_seq_len"),
                label=make_label(run.pe, row["rope_scaling"], swept[run.run_dir], row["logit_scale"]),
            )
            rows.append(row)
    return rows


def _stride_rules(rows: list[dict]) -> list[dict]:
    """Sliding rows tagged with their stride rule: ``L/2`` (the evaluator's default, stride = eval_len // 2)
    or a fixed stride ``S`` (``--stride S``: one stride at several lengths, or one that is not L/2).

    A row that fits both (stride 32 at length 64) joins the fixed curve, and the L/2 curve too when that run
    has one, so neither curve has a hole and a lone ``--stride 32`` run does not sprout a one-point L/2 curve.
    """
    def run(r):
        return r["run_dir"], r["rope_scaling"], r.get("logit_scale", "none")

    lengths: dict[tuple, set] = {}
    for r in rows:
        lengths.setdefault((*run(r), r.get("stride")), set()).add(r["eval_len"])

    def rules(r) -> tuple[bool, bool]:
        stride = r.get("stride")
        half = stride == max(1, r["eval_len"] // 2)
        return half, stride is not None and (not half or len(lengths[(*run(r), stride)]) > 1)

    has_half = {run(r) for r in rows if rules(r) == (True, False)}
    out = []
    for r in rows:
        half, fixed = rules(r)
        tags = ["L/2"] * (half and (not fixed or run(r) in has_half)) + [str(r.get("stride"))] * fixed
        out += [{**r, "stride_rule": tag} for tag in tags or [None]]
    return out


def select(rows: list[dict], protocol: str) -> list[dict]:
    """Rows of one protocol. Sliding rows carry ``stride_rule`` (see _stride_rules); when the rows hold more
    than one rule, labels gain ``[stride L/2]`` / ``[stride 32]`` so each rule is one curve per label."""
    choose("protocol", protocol, PROTOCOLS)
    picked = [dict(r) for r in rows if r["protocol"] == protocol]
    if not picked:
        have = sorted({r["protocol"] for r in rows}) or ["none"]
        raise UserError(f"no results for protocol '{protocol}'; the runs have: {', '.join(have)}")
    if protocol != "sliding":
        return picked  # non-overlapping windows: the stride is the length, nothing to tell apart
    picked = _stride_rules(picked)
    if len({r["stride_rule"] for r in picked}) > 1:
        for r in picked:
            r["label"] += f" [stride {r['stride_rule'] or '?'}]"
    return picked


def _natural(text: str) -> list:
    # "base=500000" after "base=10000", "[stride 64]" before "[stride 128]": digits compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def series_sort_key(series: Series):
    """ENCODING_ORDER first, unknown encodings after it by name; labels within one in natural order."""
    rank = ENCODING_ORDER.index(series.pe) if series.pe in ENCODING_ORDER else len(ENCODING_ORDER)
    return rank, series.pe, _natural(series.label)


def aggregate(rows: list[dict], value: str = "ppl") -> list[Series]:
    """Group rows by label and aggregate seeds into mean, sample std, min and max per evaluation length.

    Expects rows of one protocol (see select). A run that wrote the same length twice counts once (its
    last row), so a re-evaluation does not masquerade as an extra seed.
    """
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[(r["label"], r["run_dir"], r["eval_len"])] = r
    by_label: dict[str, list[dict]] = {}
    for r in latest.values():
        by_label.setdefault(r["label"], []).append(r)
    out: list[Series] = []
    for label, group in by_label.items():
        points: dict[int, Point] = {}
        for length in sorted({r["eval_len"] for r in group if r["eval_len"] is not None}):
            at = [r for r in group if r["eval_len"] == length]
            vals = [r[value] for r in at if r["status"] == "ok" and r[value] is not None]
            if vals:
                std = statistics.stdev(vals) if len(vals) > 1 else 0.0
                points[length] = Point(length, len(vals), statistics.fmean(vals), std, min(vals), max(vals), "ok")
            elif any(r["status"].startswith("not_applicable") for r in at):
                points[length] = Point(length, status="n/a")
            else:
                points[length] = Point(length)
        out.append(
            Series(
                label,
                group[0]["pe"],
                sorted({r["train_seq_len"] for r in group if r["train_seq_len"]}),
                sorted({r["seed"] for r in group if r["seed"] is not None}),
                points,
                group[0]["rope_scaling"],
            )
        )
    return sorted(out, key=series_sort_key)
