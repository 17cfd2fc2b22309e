"""Recompute every number and conclusion that results/*/README.md states from the CSVs committed beside it.

    python scripts/check_results.py            # prints each claim with PASS/FAIL; exit 1 if any fails

Each results folder keeps its per-run files under ``runs/`` (config.yaml, final.json, metrics.jsonl and the
result CSVs). A claim reads them through ropebench's own readers and returns the sentence it supports -- its
numbers formatted from the data -- and whether the data supports it; the check passes only when the data does
AND that exact sentence stands in the folder's README (whitespace aside). So no README sentence states a number
by hand, and tests/test_results.py fails CI when the data or the README moves away from the other.

A comparative sentence (one that ranks, says better / worse / below / than ...) must hold per seed: its claim
also returns (k, n), the number of seeds in which the comparison holds out of n, and the sentence must say so --
"in every seed" (or "in all n seeds") when k = n, else "in k of n seeds". A comparative sentence whose claim
returns no count, or whose wording does not match its count, fails.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ropebench.report.results import aggregate, load_results, select
from ropebench.report.table import perplexity_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Claim:
    folder: str
    # -> (the README sentence, whether the data supports it[, (seeds in which it holds, seeds)])
    check: Callable[[], tuple]
    # A single measurement (memory, throughput): no seeds to hold in, so no per-seed count.
    measurement: bool = False


# Words that make a sentence compare or rank things: such a sentence must say in how many seeds it holds.
COMPARATIVE = re.compile(r"\b(below|above|better|worse|best|worst|beats?|than|lower|higher|order|outperforms?|"
                         r"ahead|behind|wins?|loses?|improves?|hurts?|ranks?|ranking)\b", re.IGNORECASE)


def seed_count_problem(text: str, counts: tuple[int, int] | None) -> str:
    """"" when the sentence states its per-seed count as the data gives it, else why not."""
    if counts is None:
        return " [comparative sentence without a per-seed count]" if COMPARATIVE.search(text) else ""
    k, n = counts
    if k == n:
        ok = any(p in text for p in ("in every seed", f"in all {n} seeds", f"in each of the {n} seeds",
                                     f"in {n} of {n} seeds", *(("(one seed)",) if n == 1 else ())))
        return "" if ok else f" [holds in every seed ({n}); the sentence must say so]"
    return "" if f"in {k} of {n} seeds" in text else f" [holds in {k} of {n} seeds; the sentence must say so]"


CLAIMS: list[Claim] = []


def claim(folder: str, measurement: bool = False):
    def register(fn: Callable[[], tuple]) -> Callable[[], tuple]:
        CLAIMS.append(Claim(folder, fn, measurement))
        return fn

    return register


def _flat(text: str) -> str:
    return " ".join(text.split())


def in_readme(folder: str, sentence: str) -> bool:
    path = RESULTS / folder / "README.md"
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


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table_matches(folder: str, table: str = "table.md", pattern: str = "*") -> bool:
    """The committed table is exactly what `ropebench table` prints for the committed runs."""
    path = RESULTS / folder / table
    return path.is_file() and path.read_text().strip() == perplexity_table(runs(folder, pattern)).strip()


def main() -> int:
    import result_claims  # noqa: F401  (registers every folder's claims)
    from check_results import CLAIMS as registered  # the module the claims registered with, also when run as __main__

    failed = 0
    for c in registered:
        try:
            text, supported, *counts = c.check()
            problem = "" if supported else " [NOT SUPPORTED by the CSVs]"
            problem += "" if in_readme(c.folder, text) else " [NOT IN README]"
            if not c.measurement:
                problem += seed_count_problem(text, counts[0] if counts else None)
        except Exception as exc:  # a claim whose data is missing fails, with the reason
            text, problem = c.check.__name__, f" [{type(exc).__name__}: {exc}]"
        failed += bool(problem)
        print(f"{'FAIL' if problem else 'PASS'}  {c.folder}: {text}{problem}")
    print(f"claims: {len(registered) - failed} supported and quoted, {failed} not")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
