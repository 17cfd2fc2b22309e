"""The claims of results/compare_long (the main job at 4x the steps) and of which orderings at 16x survive seed,
learning rate, training length and protocol, recomputed from the committed CSVs (see check_results.py)."""

from __future__ import annotations

import itertools
import statistics

from claims_common import claim, rows, runs
from claims_compare import CORE, SEEDS, L, _fmt, _mean, _order, _seeds, lr_grid

FOLDER = "compare_long"
AT = 16 * L  # the length the orderings are read at
STEPS = {"compare": 600, "compare_long": 2400}


def _ahead(table: dict, a: str, b: str, seed: int) -> bool | None:
    """a's perplexity at 16x below b's in one seed's runs (None: the seed lacks one of them)."""
    try:
        return table[(a, seed)][AT] < table[(b, seed)][AT]
    except KeyError:
        return None


def _count(k: int, n: int) -> str:
    return f"in {k} of {n} seeds"


def _lr_rates_holding(a: str, b: str) -> tuple[list[float], list[float]]:
    """The rates of the search both encodings ran in all seeds, and those at which a's mean validation perplexity
    at 16x is below b's."""
    from ropebench.run.rundir import RunDir

    by: dict[tuple[str, float], list[float]] = {}
    for r in rows("lr", split="val"):
        if r["eval_len"] == AT and r["rope_scaling"] == "none" and r["status"] == "ok":
            by.setdefault((r["pe"], float(RunDir(r["run_dir"]).read_config().train.lr)), []).append(r["ppl"])
    rates = sorted(lr for lr in lr_grid()[a] if len(by.get((a, lr), [])) == len(SEEDS) == len(by.get((b, lr), [])))
    return rates, [lr for lr in rates if statistics.fmean(by[(a, lr)]) < statistics.fmean(by[(b, lr)])]


def _pair_claim(a: str, b: str):
    def check():
        plain, long_ = _seeds("compare"), _seeds(FOLDER)
        sliding = _seeds("compare", protocol="sliding")
        held = {name: sum(bool(_ahead(t, a, b, s)) for s in SEEDS)
                for name, t in (("plain", plain), ("long", long_), ("sliding", sliding))}
        rates, holding = _lr_rates_holding(a, b)
        robust = min(held.values()) == len(SEEDS) and holding == rates
        text = (f"{a} ahead of {b} at 16×: at {STEPS['compare']} steps {_count(held['plain'], 3)}; at "
                f"{STEPS[FOLDER]:,} steps {_count(held['long'], 3)}; with the sliding protocol "
                f"{_count(held['sliding'], 3)}; on validation at {len(holding)} of the {len(rates)} rates both ran "
                f"(3-seed means) — {'robust' if robust else 'not robust'}.")
        return text, True, (min(held.values()), len(SEEDS))

    return check


# Every pair of encodings that run at 16x, the better of each first in the main job's order there (`results/compare`).
for _a, _b in itertools.combinations(("alibi", "t5", "nope", "rope", "sinusoidal"), 2):
    claim(FOLDER, name=f"long_pair_{_a}_{_b}")(_pair_claim(_a, _b))


@claim(FOLDER)
def long_runs():
    from ropebench.run.rundir import RunDir

    names = {p.name for p in runs(FOLDER)}
    want = {f"pe={pe},seed={s}" for pe in CORE for s in SEEDS}
    steps = {RunDir(p).read_config().train.steps for p in runs(FOLDER)}
    text = (f"{len(names)} runs: the six encodings, seeds 0, 1 and 2, {STEPS[FOLDER]:,} steps each at the main job's "
            "rate for the encoding (`conf/sweep/compare_long.yaml` inherits `conf/sweep/compare.yaml`).")
    return text, names == want and steps == {STEPS[FOLDER]}


@claim(FOLDER)
def long_order_16x():
    t = _seeds(FOLDER)
    order = _order(t, AT)
    held = [s for s in SEEDS if _order(t, AT, s) == order]
    text = ("At 16× the order of the means at 2,400 steps, best first, is "
            + ", ".join(f"{pe} {_fmt(_mean(t, pe, AT))}" for pe in order)
            + f"; a seed has this order {_count(len(held), 3)}.")
    return text, True, (len(held), 3)


@claim(FOLDER)
def long_gain_at_train_len():
    plain, long_ = _seeds("compare"), _seeds(FOLDER)
    fell = [s for s in SEEDS if all(long_[(pe, s)][L] < plain[(pe, s)][L] for pe in CORE)]
    parts = ", ".join(f"{pe} {_fmt(_mean(plain, pe, L))} → {_fmt(_mean(long_, pe, L))}" for pe in CORE)
    text = (f"From 600 to 2,400 steps every encoding's test perplexity at the training length falls "
            f"{_count(len(fell), 3)} (means: {parts}).")
    return text, True, (len(fell), 3)
