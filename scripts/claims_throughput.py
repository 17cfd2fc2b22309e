"""The claims of results/throughput/README.md, recomputed from train_cpu.json and eval_cpu.json beside it."""

from __future__ import annotations

import json

from claims_common import RESULTS, claim

FOLDER = "throughput"
LEARNED, ROPE = "ropebench pe=learned", "ropebench pe=rope"


def _json(name: str) -> dict:
    return json.loads((RESULTS / FOLDER / name).read_text())


def _ratio(r: dict, rounds: bool = True) -> str:
    """``**1.036×** (per-round median 1.025, faster in 24 of 31 rounds)``."""
    faster = f", faster in {r['rounds_faster']} of {len(r['per_round'])} rounds" if rounds else ""
    return f"**{r['ratio_of_medians']:.3f}×** (per-round median {r['median_per_round']:.3f}{faster})"


def _ratios(part: str) -> tuple[dict, dict]:
    ratios = _json("train_cpu.json")[part]["ratios"]
    return ratios[LEARNED], ratios[ROPE]


@claim(FOLDER)
def train_step_ratios():
    learned, rope = _ratios("step")
    text = (f"Whole training step: ropebench pe=learned / nanoGPT {_ratio(learned)}; ropebench pe=rope / "
            f"nanoGPT+RoPE {_ratio(rope)}.")
    # the goal: >= 1 by both statistics, and faster in most rounds
    ok = all(r["ratio_of_medians"] >= 1 and r["median_per_round"] >= 1 and r["rounds_faster"] > len(r["per_round"]) / 2
             for r in (learned, rope)) and rope["baseline"] == "nanoGPT+RoPE" and learned["baseline"] == "nanoGPT"
    return text, ok


@claim(FOLDER)
def train_model_parity():
    learned, rope = _ratios("model")
    text = (f"Model alone (forward + backward): pe=learned {_ratio(learned, rounds=False)}, pe=rope "
            f"{_ratio(rope, rounds=False)} — parity within 2%")
    return text, all(abs(r["ratio_of_medians"] - 1) <= 0.02 for r in (learned, rope))


@claim(FOLDER)
def train_tokens_per_s():
    med = _json("train_cpu.json")["step"]["tokens_per_s_median"]
    text = (f"Tokens/s (medians, whole step): nanoGPT {med['nanoGPT']:,.0f}; nanoGPT+RoPE {med['nanoGPT+RoPE']:,.0f}; "
            f"ropebench learned {med[LEARNED]:,.0f}; ropebench rope {med[ROPE]:,.0f}.")
    return text, True


@claim(FOLDER)
def train_optimizer_share():
    data = _json("train_cpu.json")
    share = {name: 1 - data["step"]["tokens_per_s_median"][name] / data["model"]["tokens_per_s_median"][name]
             for name in ("nanoGPT", LEARNED)}
    text = (f"The optimizer takes {share['nanoGPT']:.1%} of nanoGPT's step (its per-tensor AdamW loop) and "
            f"{share[LEARNED]:.1%} of ropebench's (fused), as 1 − step / model-alone tokens/s.")
    ok = data["optimizers"]["nanoGPT"] == "AdamW, default loop" and data["optimizers"][LEARNED] == "AdamW, fused"
    return text, ok and share[LEARNED] < share["nanoGPT"]


@claim(FOLDER)
def train_rope_cost():
    med = _json("train_cpu.json")["step"]["tokens_per_s_median"]
    text = (f"RoPE costs {1 - med[ROPE] / med[LEARNED]:.0%} of a training step against learned positions in ropebench "
            f"({med[ROPE]:,.0f} vs {med[LEARNED]:,.0f} tokens/s).")
    return text, med[ROPE] < med[LEARNED]


def _eval_rows() -> dict[tuple[str, int], dict]:
    return {(r["encoding"], r["eval_len"]): r for r in _json("eval_cpu.json")["rows"] if r["status"] == "ok"}


@claim(FOLDER)
def eval_table():
    rows = _eval_rows()
    labels = {"rope": "rope (SDPA, causal)", "alibi": "alibi (SDPA + dense bias)"}
    lines = []
    for enc, label in labels.items():
        rates = " | ".join(f"{rows[(enc, n)]['tokens_per_s']:,.0f}" for n in (64, 256, 1024))
        calls = {rows[(enc, n)]["bias_calls_per_forward"] for n in (64, 256, 1024)}
        lines.append(f"| {label} | {rates} | {int(calls.pop()) if len(calls) == 1 else calls} |")
    return "\n".join(lines), True


@claim(FOLDER)
def eval_bookkeeping():
    fracs = [r["bookkeeping_frac"] for r in _eval_rows().values()]
    text = f"it is within the timing noise ({min(fracs):+.1%} to {max(fracs):+.1%}) at every length"
    return text.replace("-", "−"), max(abs(f) for f in fracs) < 0.1


@claim(FOLDER)
def eval_growth():
    rows = _eval_rows()
    fall = {enc: rows[(enc, 64)]["tokens_per_s"] / rows[(enc, 1024)]["tokens_per_s"] for enc in ("rope", "alibi")}
    text = f"Growth from 1x to 16x: rope's tokens/s falls {fall['rope']:.2f}x, alibi's {fall['alibi']:.2f}x."
    one_bias = all(r["bias_calls_per_forward"] == (1 if r["encoding"] == "alibi" else 0) for r in rows.values())
    return text, one_bias and fall["alibi"] > fall["rope"]


# -- results/main_job: the quickstart's main job rerun in a fresh clone -------------------------------------------
def _seed0_ppl(folder: str, pattern: str) -> dict[str, dict[int, tuple[float, int]]]:
    """encoding -> eval_len -> (perplexity, scored tokens), from the runs' eval_length.csv."""
    import csv

    out: dict[str, dict[int, tuple[float, int]]] = {}
    for run in sorted((RESULTS / folder / "runs").glob(pattern)):
        with open(run / "eval_length.csv", newline="") as f:
            for r in csv.DictReader(f):
                if (r["status"] == "ok" and r["rope_scaling"] == "none" and r.get("split", "val") == "test"
                        and r["protocol"] == "nonoverlapping"):
                    out.setdefault(r["pe"], {})[int(r["eval_len"])] = (float(r["ppl"]), int(r["n_tokens"]))
    return out


@claim("main_job")
def main_job_matches_compare_seed0():
    new, old = _seed0_ppl("main_job", "pe=*"), _seed0_ppl("compare", "pe=*,seed=0")
    diffs = {(pe, n): abs(new[pe][n][0] / old[pe][n][0] - 1) for pe in old for n in old[pe]}
    (pe, n), worst = max(diffs.items(), key=lambda kv: kv[1])
    same_tokens = all(new[pe_][n_][1] == old[pe_][n_][1] for pe_, n_ in diffs)
    exact = sorted(p for p in old if max(diffs[(p, n_)] for n_ in old[p]) < 1e-5)
    text = (f"Every perplexity is within {worst:.1%} of `results/compare`'s seed-0 run (largest: {pe} at {n} tokens), "
            f"on the same {old[pe][n][1]:,} tokens per length; {', '.join(exact)} agree to within 1e-5.")
    return text, same_tokens and set(new) == set(old) and worst < 0.02


@claim("main_job")
def main_job_order_16x():
    orders = {}
    for folder, pattern in (("main_job", "pe=*"), ("compare", "pe=*,seed=0")):
        at_16x = {pe: by_len[1024][0] for pe, by_len in _seed0_ppl(folder, pattern).items() if 1024 in by_len}
        orders[folder] = sorted(at_16x, key=at_16x.get)
    same = orders["main_job"] == orders["compare"]
    text = (f"At 16× the order, best first, is {', '.join(orders['main_job'])}, as in `results/compare`'s seed-0 run "
            "(one seed).")
    return text, same, (int(same), 1)


@claim("main_job")
def main_job_inside_seed_spread():
    import statistics

    new, old = _seed0_ppl("main_job", "pe=*"), _seed0_ppl("compare", "pe=*,seed=0")
    inside = True
    for pe in old:
        seeds = [_seed0_ppl("compare", f"pe={pe},seed={s}")[pe] for s in (0, 1, 2)]
        for n in old[pe]:
            values = [s[n][0] for s in seeds]
            inside &= abs(new[pe][n][0] - old[pe][n][0]) <= statistics.stdev(values)
    return ("Every difference is smaller than the standard deviation over `results/compare`'s seeds 0–2 at the "
            "same encoding and length (one seed)."), inside, (int(inside), 1)
