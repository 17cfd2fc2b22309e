"""The claims of results/compare_long (the main job at 4x the steps) and of which orderings at 16x survive seed,
learning rate, training length and protocol, recomputed from the committed CSVs (see check_results.py)."""

from __future__ import annotations

import functools
import itertools
import statistics

from claims_common import PROJECT, claim, rows, runs
from claims_compare import CORE, SEEDS, L, _fmt, _mean, _order, _seeds

from ropebench.run.rundir import RunDir

FOLDER = "compare_long"
AT = 16 * L  # the length the orderings are read at


def _ahead(table: dict, a: str, b: str, seed: int) -> bool | None:
    """a's perplexity at 16x below b's in one seed's runs (None: the seed lacks one of them)."""
    try:
        return table[(a, seed)][AT] < table[(b, seed)][AT]
    except KeyError:
        return None


def _count(k: int) -> str:
    return f"in {k} of {len(SEEDS)} seeds"


@functools.cache
def _steps(folder: str) -> int:
    """The training steps every run of a folder took (its runs' configs): the one value, or an error."""
    (steps,) = {RunDir(p).read_config().train.steps for p in runs(folder)}
    return steps


@functools.cache
def _tables() -> dict[str, dict]:
    """(encoding, seed) -> length -> test ppl: the main job, the long runs, the main job's sliding protocol."""
    return {"plain": _seeds("compare"), "long": _seeds(FOLDER), "sliding": _seeds("compare", protocol="sliding")}


@functools.cache
def _lr_at_16x() -> dict[tuple[str, float], list[float]]:
    """(encoding, rate) -> the search's validation perplexities at 16x, one per seed (each config read once)."""
    by: dict[tuple[str, float], list[float]] = {}
    for r in rows("lr", split="val"):
        if r["eval_len"] == AT and r["rope_scaling"] == "none" and r["status"] == "ok":
            by.setdefault((r["pe"], float(RunDir(r["run_dir"]).read_config().train.lr)), []).append(r["ppl"])
    return by


def _lr_rates_holding(a: str, b: str) -> tuple[list[float], list[float]]:
    """The rates of the search both encodings ran in all seeds, and those at which a's mean validation perplexity
    at 16x is below b's."""
    by = _lr_at_16x()
    rates = sorted(lr for (pe, lr), v in by.items() if pe == a and len(v) == len(SEEDS) == len(by.get((b, lr), [])))
    return rates, [lr for lr in rates if statistics.fmean(by[(a, lr)]) < statistics.fmean(by[(b, lr)])]


PAIRS = list(itertools.combinations(("alibi", "t5", "nope", "rope", "sinusoidal"), 2))


@functools.cache  # each pair's claim and both quotes of the summary read it
def _pair(a: str, b: str) -> tuple[dict[str, int], list[float], list[float], bool]:
    """Seeds in which a is ahead of b at 16x in each table; the search's rates both ran and those where a is ahead;
    whether the ordering is robust (every seed of every table, every rate, and at least one rate to compare)."""
    held = {name: sum(bool(_ahead(t, a, b, s)) for s in SEEDS) for name, t in _tables().items()}
    rates, holding = _lr_rates_holding(a, b)
    return held, rates, holding, min(held.values()) == len(SEEDS) and bool(rates) and holding == rates


def _pair_claim(a: str, b: str):
    def check():
        held, rates, holding, robust = _pair(a, b)
        text = (f"{a} ahead of {b} at 16×: at {_steps('compare'):,} steps {_count(held['plain'])}; at "
                f"{_steps(FOLDER):,} steps {_count(held['long'])}; with the sliding protocol "
                f"{_count(held['sliding'])}; on validation at {len(holding)} of the {len(rates)} rates both ran "
                f"({len(SEEDS)}-seed means) — {'robust' if robust else 'not robust'}.")
        return text, True, (min(held.values()), len(SEEDS))

    return check


# Every pair of encodings that run at 16x, the better of each first in the main job's order there (`results/compare`).
for _a, _b in PAIRS:
    claim(FOLDER, name=f"long_pair_{_a}_{_b}")(_pair_claim(_a, _b))


def long_robust():
    """The pairs' verdicts in one sentence, quoted by compare_long's README and the project's caption."""
    fragile = [f"{a} ahead of {b}" for a, b in PAIRS if not _pair(a, b)[3]]
    text = (f"Of the {len(PAIRS)} pairwise orderings at 16×, {len(PAIRS) - len(fragile)} hold in every seed at "
            f"{_steps('compare'):,} and {_steps(FOLDER):,} steps and with both protocols, and in the means over "
            "seeds at every learning rate of the search"
            + (f"; not robust: {', '.join(fragile)}" if fragile else "") + ".")
    return text, True, (len(SEEDS), len(SEEDS))


claim(FOLDER)(long_robust)
claim(PROJECT, name="long_robust_caption")(lambda: long_robust())  # its own function: claim() names it


@claim(FOLDER)
def long_runs():
    names = {p.name for p in runs(FOLDER)}
    want = {f"pe={pe},seed={s}" for pe in CORE for s in SEEDS}
    text = (f"{len(names)} runs: the six encodings, seeds 0, 1 and 2, {_steps(FOLDER):,} steps each (4× the main "
            "job's) at the main job's rate for the encoding (`conf/sweep/compare_long.yaml` inherits "
            "`conf/sweep/compare.yaml`).")
    return text, names == want and _steps(FOLDER) == 4 * _steps("compare")


@claim(FOLDER)
def long_order_16x():
    t = _tables()["long"]
    order = _order(t, AT)
    held = [s for s in SEEDS if _order(t, AT, s) == order]
    text = (f"At 16× the order of the means at {_steps(FOLDER):,} steps, best first, is "
            + ", ".join(f"{pe} {_fmt(_mean(t, pe, AT))}" for pe in order)
            + f"; a seed has this order {_count(len(held))}.")
    return text, True, (len(held), len(SEEDS))


@claim(FOLDER)
def long_gain_at_train_len():
    plain, long_ = _tables()["plain"], _tables()["long"]
    fell = [s for s in SEEDS if all(long_[(pe, s)][L] < plain[(pe, s)][L] for pe in CORE)]
    parts = ", ".join(f"{pe} {_fmt(_mean(plain, pe, L))} → {_fmt(_mean(long_, pe, L))}" for pe in CORE)
    text = (f"From {_steps('compare'):,} to {_steps(FOLDER):,} steps every encoding's test perplexity at the training "
            f"length falls {_count(len(fell))} (means: {parts}).")
    return text, True, (len(fell), len(SEEDS))


@claim(FOLDER)
def long_order_per_seed():
    t = _tables()["long"]
    text = (f"Per seed at 16× and {_steps(FOLDER):,} steps: "
            + "; ".join(f"seed {s}: " + ", ".join(f"{pe} {_fmt(t[(pe, s)][AT])}" for pe in _order(t, AT, s))
                        for s in SEEDS) + ".")
    return text, True
