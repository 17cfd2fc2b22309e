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
from ropebench.report.identity import Renames, base_label, identity, labels
from ropebench.report.rows import int_or_none, read_rows
from ropebench.run.config import flatten_config
from ropebench.run.rundir import RunDir, runs_below

LENGTH_CSV = "eval_length.csv"
POSITIONS_CSV = "eval_positions.csv"
PROTOCOLS = ("nonoverlapping", "sliding")
SPLITS = ("test", "val")
# The standard error (over documents) of a value column, and how it converts: ppl's from nll's (delta method).
SE_COLUMNS = {"ppl": ("nll_se", lambda value, se: value * se), "nll": ("nll_se", lambda value, se: se),
              "nll_gain": ("gain_se", lambda value, se: se),
              "nll_gain_source": ("gain_se_source", lambda value, se: se)}

# Encodings in the order the paper's figures list them; unknown names sort after these, alphabetically.
ENCODING_ORDER = ("sinusoidal", "learned", "rope", "xpos", "t5", "alibi", "kerple", "fire", "nope", "p_rope", "fox",
                  "cope")

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
    # One seed: the value's standard error over documents (``SE_COLUMNS``), NaN when the rows do not hold it.
    se: float = math.nan


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


def label_rows(runs: list[Run], tables: dict[Path, list[dict]], renames: Renames | None = None) -> None:
    """Give every row its ``series`` -- the experiment (``identity.identity``: the config minus seed and what cannot
    change a result) and the RoPE scaling and logit scale it was evaluated with -- and that series' ``label``. Rows
    of one series are seeds of one experiment; ``aggregate`` averages only them."""
    names: dict[tuple, tuple[str, str, dict]] = {}
    members: dict[tuple, list[Path]] = {}
    for run in runs:
        experiment = (run.pe, run.train_seq_len, identity(run.config))
        for row in tables[run.run_dir]:
            logit_scale = row.get("logit_scale") or "none"  # tables without the column: none
            row["series"] = (*experiment, row["rope_scaling"], logit_scale)
            base = base_label(run.pe, row["rope_scaling"], logit_scale)
            names.setdefault(row["series"], (run.pe, base, run.config))
            members.setdefault(row["series"], []).append(run.run_dir)
    label_of = labels(names)
    if renames:
        label_of = renames.apply(label_of, members)
    for run in runs:
        for row in tables[run.run_dir]:
            row["label"] = label_of[row["series"]]


# Columns a results file must have to be read at all, and the column that must hold a number on a row with
# status ok; rows that fail either are damage, skipped by read_rows.
REQUIRED = {LENGTH_CSV: ("eval_len", "ppl"), POSITIONS_CSV: ("eval_len", "position_start", "position_end", "mean_nll")}
_VALUE = {LENGTH_CSV: "ppl", POSITIONS_CSV: "mean_nll"}


def _read_table(run_dir: Path, name: str) -> list[dict]:
    return read_rows(run_dir / name, REQUIRED.get(name, ()), _VALUE.get(name))


def load_results(paths: Iterable[str | Path], filename: str = LENGTH_CSV, renames: Renames | None = None) -> list[dict]:
    """Rows of every run's ``filename`` joined with run metadata: run_dir, pe, seed, train_seq_len, series, label.

    Numeric columns come back as numbers (ppl/nll None when the row did not succeed); ``series`` is the experiment
    a row belongs to and ``label`` its name (see label_rows); ``renames``: the user's names for series.
    """
    run_dirs = find_runs(paths)
    tables = {d: _read_table(d, LENGTH_CSV) for d in run_dirs}
    runs = [read_run(d, (tables[d] or [None])[0]) for d in run_dirs]
    if filename != LENGTH_CSV:
        tables = {d: _read_table(d, filename) if (d / filename).is_file() else [] for d in run_dirs}
    for run in runs:
        for row in tables[run.run_dir]:
            row["protocol"] = (row.get("protocol") or "nonoverlapping").strip()
            row.update(run_dir=run.run_dir, pe=run.pe, seed=run.seed,
                       train_seq_len=run.train_seq_len or row.get("train_seq_len"))
            if not row.get("tokenizer"):  # a table without the column (positions, older CSVs): the run's own
                row["tokenizer"] = str(run.config.get("data.tokenizer") or "bytes")
    label_rows(runs, tables, renames)
    return [row for run in runs for row in tables[run.run_dir]]


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


def choose_split(rows: list[dict], split: str | None = None) -> str:
    """The held-out split a table or figure shows: ``split`` if given, else test where any row has it (reported
    results), else validation (runs from before the test split, learning-rate searches)."""
    have = {r.get("split") or "val" for r in rows}
    if split is None:
        return "test" if "test" in have else "val"
    choose("split", split, SPLITS)
    if rows and split not in have:
        raise UserError(f"no results on the {split} split; the runs have: {', '.join(sorted(have))}")
    return split


def _warn_other_split(rows: list[dict], picked: list[dict], split: str) -> None:
    """Runs whose results (of the protocol shown) are all on another split are left out of a table or figure:
    say so, naming them."""
    import sys

    shown, protocols = {r["run_dir"] for r in picked}, {r["protocol"] for r in picked}
    left = sorted({str(r["run_dir"]) for r in rows if r["run_dir"] not in shown and r["protocol"] in protocols})
    if left:
        print(f"warning: left out (no results on the {split} split; see --split): {', '.join(left)}", file=sys.stderr)


def select(rows: list[dict], protocol: str, split: str | None = None) -> list[dict]:
    """Rows of one protocol and one held-out split (``choose_split``). Sliding rows carry ``stride_rule`` (see
    _stride_rules); when the rows hold more than one rule, labels gain ``[stride L/2]`` / ``[stride 32]`` so each
    rule is one curve per label."""
    choose("protocol", protocol, PROTOCOLS)
    split = choose_split(rows, split)
    picked = [dict(r) for r in rows if r["protocol"] == protocol and (r.get("split") or "val") == split]
    _warn_other_split(rows, picked, split)
    if not picked:
        have = sorted({r["protocol"] for r in rows}) or ["none"]
        raise UserError(f"no results for protocol '{protocol}'; the runs have: {', '.join(have)}")
    if protocol != "sliding":
        return picked  # non-overlapping windows: the stride is the length, nothing to tell apart
    picked = _stride_rules(picked)
    for r in picked:
        r["series"] = (*r["series"], r["stride_rule"])  # each rule its own curve
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


def _one_seed_se(rows: list[dict], value: str) -> float:
    """The standard error of a single row's value (NaN for several rows, or a row without one)."""
    column, convert = SE_COLUMNS.get(value, (None, None))
    if len(rows) != 1 or column is None or rows[0].get(column) is None:
        return math.nan
    return convert(rows[0][value], rows[0][column])


def _refuse_copies(rows: Iterable[dict]) -> None:
    """Two run directories of one series with one seed are one run twice (a copy, or one model evaluated into two
    places): averaged, they would pass for two seeds with a spread that is not there."""
    seen: dict[tuple, str] = {}
    for r in rows:
        key = (r["series"], r["seed"], r["eval_len"])
        other = seen.setdefault(key, str(r["run_dir"]))
        if other != str(r["run_dir"]):
            seed = "no seed" if r["seed"] is None else f"seed {r['seed']}"
            raise UserError(f"'{other}' and '{r['run_dir']}' are the same experiment with {seed}: a copy would count "
                            f"as a second seed; pass only one of them")


def aggregate(rows: list[dict], value: str = "ppl") -> list[Series]:
    """Group rows by series (one experiment: runs that differ in nothing but the seed) and aggregate the seeds
    into mean, sample std, min and max per evaluation length.

    Expects rows of one protocol (see select). A run that wrote the same length twice counts once (its
    last row), so a re-evaluation does not masquerade as an extra seed.
    """
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[(r["series"], r["run_dir"], r["eval_len"])] = r
    _refuse_copies(latest.values())
    by_series: dict[tuple, list[dict]] = {}
    for r in latest.values():
        by_series.setdefault(r["series"], []).append(r)
    out: list[Series] = []
    for group in by_series.values():
        label = group[0]["label"]
        points: dict[int, Point] = {}
        for length in sorted({r["eval_len"] for r in group if r["eval_len"] is not None}):
            at = [r for r in group if r["eval_len"] == length]
            ok = [r for r in at if r["status"] == "ok" and r.get(value) is not None]
            vals = [r[value] for r in ok]
            if vals:
                std = statistics.stdev(vals) if len(vals) > 1 else 0.0
                points[length] = Point(length, len(vals), statistics.fmean(vals), std, min(vals), max(vals), "ok",
                                       _one_seed_se(ok, value))
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
