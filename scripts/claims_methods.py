"""The claims of results/methods/README.md: each 2024-2026 method's training step against RoPE's, recomputed from
bench_train.json beside it (`ropebench bench train --json`)."""

from __future__ import annotations

import json

from claims_common import RESULTS, claim

FOLDER = "methods"
BUDGET = 1.3  # issue 20: a method's training step within 1.3x RoPE's (FoX and CoPE may cost more: said)
COSTLY = ("fox", "cope")


def _rows() -> dict[str, dict]:
    data = json.loads((RESULTS / FOLDER / "bench_train.json").read_text())
    return {r["encoding"]: r for r in data["rows"]}


@claim(FOLDER, measurement=True)
def methods_step_ratios():
    rows = _rows()
    listed = ", ".join(f"{name} {r['ratio_to_rope']:.2f}×" for name, r in rows.items() if name != "rope")
    within = [n for n, r in rows.items() if r["ratio_to_rope"] <= BUDGET]
    text = (f"Training step / RoPE's (median of the rounds' ratios): {listed}; {len(within)} of {len(rows)} "
            f"entries are within {BUDGET}× RoPE's.")
    others = [n for n in rows if n not in COSTLY]
    return text, all(rows[n]["ratio_to_rope"] <= BUDGET for n in others) and rows["rope"]["ratio_to_rope"] == 1.0
