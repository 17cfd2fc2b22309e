"""Read finished run directories and aggregate their length-generalisation results.

A run directory holds ``.hydra/config.yaml`` and ``eval_length.csv`` (and optionally ``eval_positions.csv``);
a sweep directory holds run directories one or two levels down. Everything here is stdlib + OmegaConf so
the plotting and table code can be tested without torch.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ropebench.errors import UserError, choose

LENGTH_CSV = "eval_length.csv"
POSITIONS_CSV = "eval_positions.csv"
CONFIG = Path(".hydra") / "config.yaml"
PROTOCOLS = ("nonoverlapping", "sliding")

# Encodings in the order the paper's figures list them; unknown names sort after these, alphabetically.
ENCODING_ORDER = ("sinusoidal", "learned", "rope", "xpos", "t5", "alibi", "kerple", "fire", "nope")

# Config keys that never change what a model learned (bookkeeping, hardware, logging, evaluation settings
# that the CSV rows already carry), so two runs differing only in them are the same experiment.
_IGNORED = (
    "seed",
    "resume",
    "sweep_name",
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


def _is_run_dir(path: Path) -> bool:
    return (path / LENGTH_CSV).is_file()


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Evaluated run directories under ``paths`` (run dirs, sweep dirs, or eval_length.csv files)."""
    found: dict[Path, None] = {}  # dict keeps first-seen order and drops duplicates
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"path '{raw}' does not exist; expected a run directory or a sweep directory")
        if path.is_file() and path.name == LENGTH_CSV:
            path = path.parent
        if not path.is_dir():
            raise UserError(f"path '{raw}' is a file; expected a run directory or a sweep directory")
        if _is_run_dir(path):
            found[path.resolve()] = None
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        runs = [c for c in children if _is_run_dir(c)]
        # Two levels: sweeps/<name>/<timestamp>/<run> given as sweeps/<name>.
        runs += [
            g for c in children if not _is_run_dir(c) for g in sorted(c.iterdir()) if g.is_dir() and _is_run_dir(g)
        ]
        if not runs:
            what = (
                "has no eval_length.csv; evaluate it first"
                if (path / CONFIG).is_file()
                else (
                    f"holds no evaluated run; expected a run directory with {LENGTH_CSV} "
                    "or a sweep directory whose runs have one"
                )
            )
            raise UserError(f"path '{raw}' {what}")
        for run in sorted(runs):
            found[run.resolve()] = None
    return list(found)


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        node = tuple(node)  # hashable, so values can be compared and used as keys
    return {prefix[:-1]: node}


def _int_or_none(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def read_run(run_dir: Path, first_row: dict[str, str] | None = None) -> Run:
    """The run's metadata from its config, falling back to the CSV's columns when the config is absent."""
    config: dict[str, object] = {}
    cfg_path = run_dir / CONFIG
    if cfg_path.is_file():
        from omegaconf import OmegaConf

        try:
            # Hydra saves the config unresolved; keep interpolations as text rather than resolving env vars.
            config = _flatten(OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False))
        except Exception as exc:  # a corrupt YAML is the user's file to fix
            raise UserError(f"cannot read '{cfg_path}': {exc}".splitlines()[0]) from exc
    row = first_row or {}
    pe = str(config.get("pe.name") or row.get("pe") or "unknown")
    seq_len = _int_or_none(config.get("train.seq_len", row.get("train_seq_len")))
    return Run(run_dir, pe, _int_or_none(config.get("seed")), seq_len, config)


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
        for run in group:
            result[run.run_dir] = [(k, run.config[k]) for k in global_keys + pe_keys]
    return result


def _short(key: str) -> str:
    if key in _SHORT:
        return _SHORT[key]
    parts = key.split(".")
    # "model.name" reads better as "model=small" than "name=small".
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def make_label(pe: str, rope_scaling: str = "none", swept: list[tuple[str, object]] = ()) -> str:
    """``rope``, ``rope+yarn``, ``rope (L=128, base=500000)``: encoding, scaling, distinguishing keys."""
    label = pe if rope_scaling in ("", "none") else f"{pe}+{rope_scaling}"
    parts = [f"{_short(k)}={v:g}" if isinstance(v, float) else f"{_short(k)}={v}" for k, v in swept]
    if len(parts) > 3:  # runs from unrelated setups: keep the legend readable (the tables keep every key)
        parts = [*parts[:3], "…"]
    return f"{label} ({', '.join(parts)})" if parts else label


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float_or_none(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def load_results(paths: Iterable[str | Path], filename: str = LENGTH_CSV) -> list[dict]:
    """Rows of every run's ``filename`` joined with run metadata: run_dir, pe, seed, train_seq_len, label.

    Numeric columns come back as numbers (ppl/nll None when the row did not succeed); ``label`` combines the
    encoding, the row's rope_scaling and the config keys that differ between the runs (see swept_keys).
    """
    run_dirs = find_runs(paths)
    tables = {d: _read_csv(d / LENGTH_CSV) for d in run_dirs}
    runs = [read_run(d, (tables[d] or [None])[0]) for d in run_dirs]
    swept = swept_keys(runs)
    rows: list[dict] = []
    for run in runs:
        table = (
            tables[run.run_dir]
            if filename == LENGTH_CSV
            else (_read_csv(run.run_dir / filename) if (run.run_dir / filename).is_file() else [])
        )
        for raw in table:
            row: dict = dict(raw)
            for col in ("eval_len", "stride", "n_tokens", "train_seq_len", "position_start", "position_end"):
                if col in row:
                    row[col] = _int_or_none(row[col])
            for col in ("ppl", "nll", "mean_nll"):
                if col in row:
                    row[col] = _float_or_none(row[col])
            row["rope_scaling"] = (row.get("rope_scaling") or "none").strip()
            row["protocol"] = (row.get("protocol") or "nonoverlapping").strip()
            row["status"] = (row.get("status") or "ok").strip()
            row.update(
                run_dir=run.run_dir,
                pe=run.pe,
                seed=run.seed,
                train_seq_len=run.train_seq_len or row.get("train_seq_len"),
                label=make_label(run.pe, row["rope_scaling"], swept[run.run_dir]),
            )
            rows.append(row)
    return rows


def select(rows: list[dict], protocol: str) -> list[dict]:
    """Rows of one protocol; labels gain ``[stride=N]`` when a run was scored at several strides."""
    choose("protocol", protocol, PROTOCOLS)
    picked = [dict(r) for r in rows if r["protocol"] == protocol]
    if not picked:
        have = sorted({r["protocol"] for r in rows}) or ["none"]
        raise UserError(f"no results for protocol '{protocol}'; the runs have: {', '.join(have)}")
    # Stride tags the label only when one run scored one length at several strides; a stride that merely
    # follows the length (non-overlapping windows, or stride = length / 2) is not a separate experiment.
    strides: dict[tuple, set] = {}
    for r in picked:
        strides.setdefault((r["run_dir"], r["eval_len"], r["rope_scaling"]), set()).add(r.get("stride"))
    if any(len(v) > 1 for v in strides.values()):
        for r in picked:
            r["label"] += f" [stride={r.get('stride')}]"
    return picked


def _sort_key(series: Series):
    rank = ENCODING_ORDER.index(series.pe) if series.pe in ENCODING_ORDER else len(ENCODING_ORDER)
    return rank, series.pe, series.label


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
            )
        )
    return sorted(out, key=_sort_key)
