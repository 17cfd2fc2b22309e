"""How far a model holds its perplexity, and how far it uses its context: two lengths per run.

* **hold length**: the longest evaluated length such that at every evaluated length from the training length L up
  to it, perplexity stays within ``HOLD_TOLERANCE`` (5%) above the perplexity at L (lower is within too).
* **use length**: the longest evaluated length whose ``nll_gain`` (cropped NLL - full NLL, ropebench.eval.crop)
  is significantly above zero (more than 2 standard errors over documents); L when no longer length is --
  the model scores as if it saw only its last L tokens.

A model can hold far past L and use nothing of it (flat perplexity that is the cropped perplexity), which is the
distinction these two numbers draw. Both are computed per run, then shown per series (one value per seed).
"""

from __future__ import annotations

import statistics

from ropebench.eval.crop import gain_is_significant

HOLD_TOLERANCE = 0.05


def hold_length(rows: list[dict]) -> int | None:
    """Rows of one run (one protocol, scaling and split): its hold length, None without a result at L."""
    ppl = {r["eval_len"]: r["ppl"] for r in rows if r["status"] == "ok" and r.get("ppl") is not None}
    train_len = next((r["train_seq_len"] for r in rows if r.get("train_seq_len")), None)
    if train_len not in ppl:
        return None
    held = train_len
    for length in sorted(n for n in {r["eval_len"] for r in rows} if n > train_len):
        if length not in ppl or ppl[length] > (1 + HOLD_TOLERANCE) * ppl[train_len]:
            break  # a length that failed or is not applicable ends the hold too
        held = length
    return held


def use_length(rows: list[dict]) -> int | None:
    """Rows of one run: its use length, None when no row past L has a cropped baseline."""
    train_len = next((r["train_seq_len"] for r in rows if r.get("train_seq_len")), None)
    cropped = [r for r in rows if r["status"] == "ok" and r.get("nll_gain") is not None
               and train_len and r["eval_len"] > train_len]
    if train_len is None or not cropped:
        return None
    used = [r["eval_len"] for r in cropped if gain_is_significant(r["nll_gain"], r.get("gain_se"))]
    return max(used, default=train_len)


METRICS = {"hold": hold_length, "use": use_length}


def per_run(rows: list[dict], metric: str) -> dict[str, list[tuple[int | None, int | None]]]:
    """label -> [(seed, length)] for each run of the label, in seed order (rows as load_results gives them, of
    one protocol and split)."""
    runs: dict[tuple[str, object], list[dict]] = {}
    for r in rows:
        runs.setdefault((r["label"], r["run_dir"]), []).append(r)
    out: dict[str, list[tuple[int | None, int | None]]] = {}
    for (label, _), group in runs.items():
        out.setdefault(label, []).append((group[0].get("seed"), METRICS[metric](group)))
    return {label: sorted(values, key=lambda sv: (sv[0] is None, sv[0] or 0)) for label, values in out.items()}


def describe(values: list[int | None]) -> str:
    """A table cell: the median length, and every seed's when they differ ("128 (96, 128, 128)")."""
    known = [v for v in values if v is not None]
    if not known:
        return "—"
    middle = statistics.median_low(known)
    if len(set(known)) == 1 and len(known) == len(values):
        return str(middle)
    return f"{middle} ({', '.join('—' if v is None else str(v) for v in values)})"
