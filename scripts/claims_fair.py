"""The claims of results/lr_mult (the encodings' own learning-rate multiples), recomputed
from the committed CSVs (see check_results.py)."""

from __future__ import annotations

from claims_common import RESULTS, claim, rows

PARAMETRIC = ("t5", "kerple", "fire", "learned")
# The choice rule of conf/pe/*.yaml: the smallest multiple within this much of the best validation perplexity.
WITHIN = 0.01


def _fmt(x: float) -> str:
    return f"{x:.2f}"


# -- lr_mult ------------------------------------------------------------------------------------------------------
def _by_mult() -> dict[str, dict[float, float]]:
    """encoding -> pe.lr_mult -> validation perplexity at the training length (one seed)."""
    from ropebench.run.rundir import RunDir

    out: dict[str, dict[float, float]] = {}
    for r in rows("lr_mult"):
        if r["eval_len"] == 64 and r["status"] == "ok" and r["split"] == "val":
            mult = float(RunDir(r["run_dir"]).read_config().pe.lr_mult)
            out.setdefault(r["pe"], {})[mult] = r["ppl"]
    return out


def chosen_mult(by: dict[float, float]) -> float:
    best = min(by.values())
    return min(m for m, v in by.items() if v <= (1 + WITHIN) * best)


def _conf_mult(pe: str) -> float:
    from omegaconf import OmegaConf

    return float(OmegaConf.load(RESULTS.parent / "conf" / "pe" / f"{pe}.yaml").get("lr_mult", 1.0))


@claim("lr_mult")
def lr_mult_best():
    by = _by_mult()
    parts = []
    for pe in PARAMETRIC:
        best = min(by[pe], key=by[pe].get)
        parts.append(f"{pe} {best:g} ({_fmt(by[pe][best])})")
    # A plateau: the multiple the rule picks is below the largest tried, so going further gains under 1%.
    plateau = all(chosen_mult(by[pe]) < max(by[pe]) for pe in PARAMETRIC)
    text = "Best multiple by validation perplexity at the training length: " + ", ".join(parts) + " (one seed)."
    return text, plateau, (1, 1)


@claim("lr_mult")
def lr_mult_chosen():
    by = _by_mult()
    chosen = {pe: chosen_mult(by[pe]) for pe in PARAMETRIC}
    ok = all(_conf_mult(pe) == chosen[pe] for pe in PARAMETRIC)
    text = ("Chosen, the smallest multiple within 1% of the best (one seed), the `lr_mult` of `conf/pe/*.yaml`: " +
            ", ".join(f"{pe} {chosen[pe]:g}" for pe in PARAMETRIC) + ".")
    return text, ok, (1, 1)


@claim("lr_mult")
def lr_mult_t5_starved():
    by = _by_mult()["t5"]
    at, base = by[chosen_mult(by)], by[1.0]
    text = (f"At the shared rate (lr_mult 1) T5 is {base / at - 1:.0%} worse at the training length than at its chosen "
            f"multiple (one seed): {_fmt(base)} vs {_fmt(at)}.")
    return text, base > at, (1, 1)


@claim("lr_mult")
def lr_mult_t5_plateau():
    by = _by_mult()["t5"]
    spread = max(by[m] for m in by if m >= 100) / min(by[m] for m in by if m >= 100) - 1
    text = f"From 100 to 1000 T5's validation perplexity at the training length varies by {spread:.1%}."
    return text, spread < 0.02


@claim("lr_mult")
def lr_mult_next_below():
    """How far the multiple just below each choice is from the best: what the 1% rule turned down."""
    by = _by_mult()
    below = {pe: max(m for m in by[pe] if m < chosen_mult(by[pe]))
             for pe in PARAMETRIC if min(by[pe]) < chosen_mult(by[pe])}
    behind = {pe: by[pe][m] / min(by[pe].values()) - 1 for pe, m in below.items()}
    text = ("The multiple just below each choice, against the best: "
            + ", ".join(f"{pe} {below[pe]:g} is {behind[pe]:.1%} behind" for pe in below) + " (one seed).")
    return text, all(gap > WITHIN for gap in behind.values()), (1, 1)
