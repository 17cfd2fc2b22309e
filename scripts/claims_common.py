"""What every claim module shares (see check_results.py): the claim registry and the readers of the committed
runs. The claim modules import this one, and check_results.py imports them: no module imports its importer."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ropebench.report.results import aggregate, load_results, select
from ropebench.report.table import perplexity_table

RESULTS = Path(__file__).resolve().parents[1] / "results"
# The folder name of a claim the project's own README quotes (its figure caption states the main results).
PROJECT = ".."


@dataclass
class Claim:
    folder: str
    # -> (the README sentence, whether the data supports it[, (seeds in which it holds, seeds)])
    check: Callable[[], tuple]
    # A single measurement (memory, throughput): no seeds to hold in, so no per-seed count.
    measurement: bool = False


CLAIMS: list[Claim] = []


def claim(folder: str, measurement: bool = False, name: str | None = None):
    """Register a claim of results/FOLDER; ``name`` names one a factory made (templates and reports use it)."""
    def register(fn: Callable[[], tuple]) -> Callable[[], tuple]:
        if name:
            fn.__name__ = name
        CLAIMS.append(Claim(folder, fn, measurement))
        return fn

    return register


def _flat(text: str) -> str:
    return " ".join(text.split())


def in_readme(folder: str, sentence: str) -> bool:
    path = RESULTS.parent / "README.md" if folder == PROJECT else RESULTS / folder / "README.md"
    return path.is_file() and _flat(sentence) in _flat(path.read_text())


# -- reading the committed runs --------------------------------------------------------------------------------
def runs(folder: str, pattern: str = "*") -> list[Path]:
    return sorted((RESULTS / folder / "runs").glob(pattern))


def rows(folder: str, pattern: str = "*", protocol: str = "nonoverlapping", split: str | None = None) -> list[dict]:
    """One protocol's rows of one held-out split (None: test where the runs have it, else validation)."""
    return select(load_results(runs(folder, pattern)), protocol, split)


def means(folder: str, pattern: str = "*") -> dict[str, dict[int, float]]:
    """label -> eval_len -> mean perplexity over seeds (NaN where not applicable)."""
    return {s.label: {L: p.mean for L, p in s.points.items()} for s in aggregate(rows(folder, pattern))}


def per_seed(folder: str, pattern: str = "*") -> dict[tuple[str, int], dict[int, float]]:
    """(encoding, seed) -> eval_len -> perplexity, rows without rope scaling only."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in rows(folder, pattern):
        if r["rope_scaling"] == "none" and r["status"] == "ok":
            out.setdefault((r["pe"], r["seed"]), {})[r["eval_len"]] = r["ppl"]
    return out


def ranking(values: dict[str, float]) -> list[str]:
    """Names ordered from lowest to highest value, NaN (not applicable) dropped."""
    return [k for k, v in sorted((kv for kv in values.items() if not math.isnan(kv[1])), key=lambda kv: kv[1])]


def seed_list(values: list) -> str:
    """Per-seed values, comma-separated; "—" where a run has none."""
    return ", ".join("—" if v is None else str(v) for v in values)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table_matches(folder: str, table: str = "table.md", pattern: str = "*") -> bool:
    """The committed table is exactly what `ropebench table` prints for the committed runs."""
    path = RESULTS / folder / table
    return path.is_file() and path.read_text().strip() == perplexity_table(runs(folder, pattern)).strip()
