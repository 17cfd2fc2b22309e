"""Recompute every number and conclusion that results/*/README.md states from the CSVs committed beside it.

    python scripts/check_results.py            # prints each claim with PASS/FAIL; exit 1 if any fails

Each results folder keeps its per-run files under ``runs/`` (config.yaml, final.json, metrics.jsonl and the
result CSVs). A claim reads them through ropebench's own readers and returns the sentence it supports -- its
numbers formatted from the data -- and whether the data supports it; the check passes only when the data does
AND that exact sentence stands in the folder's README (whitespace aside). So no README sentence states a number
by hand, and tests/test_results.py fails CI when the data or the README moves away from the other. The claims
live in result_claims.py and the claims_*.py modules, on the registry of claims_common.py.

A comparative sentence (one that ranks, says better / worse / below / than ...) must hold per seed: its claim
also returns (k, n), the number of seeds in which the comparison holds out of n, and the sentence must say so --
"in every seed" (or "in all n seeds") when k = n, else "in k of n seeds". A comparative sentence whose claim
returns no count, or whose wording does not match its count, fails.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import result_claims  # noqa: E402,F401  (registers every folder's claims)
from claims_common import CLAIMS, in_readme  # noqa: E402

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


def main() -> int:
    failed = 0
    for c in CLAIMS:
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
    print(f"claims: {len(CLAIMS) - failed} supported and quoted, {failed} not")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
