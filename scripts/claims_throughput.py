"""The claims of results/throughput/README.md, recomputed from train_cpu.json and eval_cpu.json beside it."""

from __future__ import annotations

import json

from check_results import RESULTS, claim

FOLDER = "throughput"
LEARNED, ROPE = "ropebench pe=learned", "ropebench pe=rope"


def _json(name: str) -> dict:
    return json.loads((RESULTS / FOLDER / name).read_text())


def _rounds(r: dict) -> str:
    return f"faster in {r['rounds_faster']} of {len(r['per_round'])} rounds"


@claim(FOLDER)
def train_step_ratios():
    step = _json("train_cpu.json")["step"]["ratios"]
    learned, rope = step[LEARNED], step[ROPE]
    text = (f"Whole training step: ropebench pe=learned / nanoGPT **{learned['ratio_of_medians']:.3f}×** (per-round "
            f"median {learned['median_per_round']:.3f}, {_rounds(learned)}); ropebench pe=rope / nanoGPT+RoPE "
            f"**{rope['ratio_of_medians']:.3f}×** (per-round median {rope['median_per_round']:.3f}, {_rounds(rope)}).")
    # the goal: >= 1 by both statistics, and faster in most rounds
    ok = all(r["ratio_of_medians"] >= 1 and r["median_per_round"] >= 1 and r["rounds_faster"] > len(r["per_round"]) / 2
             for r in (learned, rope)) and rope["baseline"] == "nanoGPT+RoPE" and learned["baseline"] == "nanoGPT"
    return text, ok


@claim(FOLDER)
def train_model_parity():
    model = _json("train_cpu.json")["model"]["ratios"]
    learned, rope = model[LEARNED], model[ROPE]
    text = (f"Model alone (forward + backward): pe=learned **{learned['ratio_of_medians']:.3f}×** (per-round median "
            f"{learned['median_per_round']:.3f}), pe=rope **{rope['ratio_of_medians']:.3f}×** (per-round median "
            f"{rope['median_per_round']:.3f}) — parity within 2%")
    ok = all(abs(r["ratio_of_medians"] - 1) <= 0.02 for r in (learned, rope))
    return text, ok


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
