"""The claims of results/extend_context: do RoPE runs fine-tuned from 64 to 256 tokens (direct, PI, YaRN, PoSE)
use the context up to their fine-tuned length, and past it? Recomputed from the committed CSVs (see
check_results.py); every comparison is counted per seed.

Two cropped baselines per length (ropebench.eval.crop): ``nll_gain`` cuts each token's context to the run's own
training length (256), ``nll_gain_source`` to its source run's (64). Up to 256 the first is zero by definition,
so use *up to* the fine-tuned length is the source gain; use *past* it is the own gain. PoSE trains on windows of
the source's length (64 tokens, positions reaching 256), so its own crop is the source's: its ``nll_gain`` is the
gain over 64 tokens at every length, and no crop to 256 exists for it."""

from __future__ import annotations

import csv
import statistics

from claims_common import claim, rows, runs

from ropebench.eval.crop import gain_is_significant
from ropebench.report.context import hold_length

FOLDER = "extend_context"
SOURCE_LEN, TUNED_LEN = 64, 256
SEEDS = (0, 1, 2)
# The run-name prefix of each method (its conf/extend/ file) and its name in the README.
METHODS = {"direct": "direct", "linear": "PI", "yarn": "YaRN", "pose_yarn": "PoSE+YaRN"}


def _by_run(method: str) -> dict[int, list[dict]]:
    """seed -> the test rows of the method's run at that seed (as trained: its own scaling)."""
    out: dict[int, list[dict]] = {}
    for seed in SEEDS:
        (run,) = runs(FOLDER, f"extend={method},seed={seed},*")
        out[seed] = rows(FOLDER, run.name)
    return out


def _at(rows_: list[dict], length: int) -> dict:
    (row,) = [r for r in rows_ if r["eval_len"] == length and r["status"] == "ok"]
    return row


def _columns(rows_: list[dict]) -> tuple[str, str, int]:
    """(the gain over cropping to 64 tokens, its standard error, the run's own crop length) of one run."""
    own = next(r["train_seq_len"] for r in rows_)
    return ("nll_gain", "gain_se", own) if own == SOURCE_LEN else ("nll_gain_source", "gain_se_source", own)


def _gains(by: dict[int, list[dict]], lengths: list[int], gain: str, se: str) -> tuple[dict, list[int]]:
    """(length -> each seed's gain, the seeds whose gain clears 2 standard errors at one of the lengths at least)."""
    gains = {n: [_at(by[s], n)[gain] for s in SEEDS] for n in lengths}
    used = [s for s in SEEDS if any(gain_is_significant(_at(by[s], n)[gain], _at(by[s], n)[se]) for n in lengths)]
    return gains, used


def _mean(values) -> str:
    return f"{statistics.fmean(values):+.4f}"


def _sentence(method: str, part: str, crop: str, lengths: list[int], gains: dict, used: list, where: str) -> str:
    """One method's gains at ``lengths`` over cropping to ``crop``, and the seeds in which one is significant."""
    return (f"**{METHODS[method]}**, {part}: the gain over cropping to {crop} is "
            f"{' / '.join(_mean(gains[n]) for n in lengths)} nats/token at {' / '.join(map(str, lengths))} (mean over "
            f"seeds), more than 2 standard errors above zero at some length {where} in {len(used)} of 3 seeds")


def _up_to_claim(method: str):
    def check():
        by = _by_run(method)
        gain, se, _ = _columns(by[0])
        inside = [n for n in sorted({r["eval_len"] for r in by[0]}) if SOURCE_LEN < n <= TUNED_LEN]
        gains, used = _gains(by, inside, gain, se)
        text = _sentence(method, "up to its fine-tuned length", "the source's 64 tokens", inside, gains, used,
                         "up to 256") + "."
        return text, True, (len(used), 3)

    return check


def _past_claim(method: str):
    def check():
        by = _by_run(method)
        past = [n for n in sorted({r["eval_len"] for r in by[0]}) if n > TUNED_LEN]
        gains, used = _gains(by, past, "nll_gain", "gain_se")
        held = [hold_length(by[s]) for s in SEEDS]
        own = _columns(by[0])[2]
        crop = "256 tokens" if own == TUNED_LEN else f"{own} tokens (its training windows; it has no crop to 256)"
        text = (_sentence(method, "past it", crop, past, gains, used, "past 256")
                + f"; hold length per seed {', '.join(map(str, held))}.")
        return text, True, (len(used), 3)

    return check


for _method in METHODS:
    claim(FOLDER, name=f"extend_context_up_to_{_method}")(_up_to_claim(_method))
    claim(FOLDER, name=f"extend_context_past_{_method}")(_past_claim(_method))


@claim(FOLDER)
def extend_context_probes():
    probe: list[dict] = []
    for run in runs(FOLDER):
        with open(run / "probe.csv", newline="") as f:
            method, seed = run.name.split(",")[0].split("=")[1], run.name.split("seed=")[1].split(",")[0]
            probe += [dict(r, method=method, seed=seed) for r in csv.DictReader(f) if r["status"] == "ok"]
    lengths = sorted({int(r["eval_len"]) for r in probe})
    chance = {float(r["chance"]) for r in probe}

    def acc(method: str, n: int) -> str:
        values = [float(r["accuracy"]) for r in probe if r["method"] == method and int(r["eval_len"]) == n]
        return f"{statistics.fmean(values):.2f}"

    no_exact = [s for s in SEEDS if all(float(r["exact_accuracy"]) == 0 for r in probe if r["seed"] == str(s))]
    text = ("Retrieval probes (niah_single and vt, K = 6 candidates, chance "
            f"{min(chance):.2f}, 3 depths × 6 trials per task, length and seed), mean likelihood accuracy at "
            f"{' / '.join(map(str, lengths))} tokens: "
            + "; ".join(f"{name} {' / '.join(acc(m, n) for n in lengths)}" for m, name in METHODS.items())
            + f". Greedy exact accuracy is 0 at every length, task and depth, for every method, in {len(no_exact)} "
            "of 3 seeds.")
    return text, len(chance) == 1 and {r["task"] for r in probe} == {"niah_single", "vt"}, (len(no_exact), 3)


@claim(FOLDER)
def extend_context_past_order():
    by = {m: _by_run(m) for m in METHODS}
    past = [n for n in sorted({r["eval_len"] for r in by["direct"][0]}) if n > TUNED_LEN]
    negative = [s for s in SEEDS if all(_at(by[m][s], n)["nll_gain"] < 0 for m in METHODS for n in past)]
    longest = past[-1]
    ends = [s for s in SEEDS if sorted(METHODS, key=lambda m: _at(by[m][s], longest)["nll_gain"])[::3] ==
            ["linear", "direct"]]
    text = (f"Past 256, every method's gain is below zero at every length in {len(negative)} of 3 seeds; at "
            f"{longest} PI's gain is the lowest and direct fine-tuning's the highest in {len(ends)} of 3 seeds.")
    return text, True, (min(len(negative), len(ends)), 3)
