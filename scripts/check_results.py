"""Recompute every number and conclusion that results/*/README.md states from the CSVs committed beside it.

    python scripts/check_results.py            # prints each claim with PASS/FAIL; exit 1 if any fails

Each results folder keeps its per-run files under ``runs/`` (config.yaml, final.json, metrics.jsonl and the
result CSVs). A claim reads them through ropebench's own readers and returns the sentence it supports -- its
numbers formatted from the data -- and whether the data supports it; the check passes only when the data does
AND that exact sentence stands in the folder's README (whitespace aside). So no README sentence states a number
by hand, and tests/test_results.py fails CI when the data or the README moves away from the other. The claims
live in result_claims.py and the claims_*.py modules, on the registry of claims_common.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import result_claims  # noqa: E402,F401  (registers every folder's claims)
from claims_common import CLAIMS, in_readme  # noqa: E402


def main() -> int:
    failed = 0
    for c in CLAIMS:
        try:
            text, supported = c.check()
            problem = "" if supported else " [NOT SUPPORTED by the CSVs]"
            problem += "" if in_readme(c.folder, text) else " [NOT IN README]"
        except Exception as exc:  # a claim whose data is missing fails, with the reason
            text, problem = c.check.__name__, f" [{type(exc).__name__}: {exc}]"
        failed += bool(problem)
        print(f"{'FAIL' if problem else 'PASS'}  {c.folder}: {text}{problem}")
    print(f"claims: {len(CLAIMS) - failed} supported and quoted, {failed} not")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
