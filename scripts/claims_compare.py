"""The claims of results/lr (the learning-rate search, on validation), results/compare (the main result, on test)
and results/context (does the model use the context past L?), recomputed from the committed CSVs (see
check_results.py). Every comparison is counted per seed."""

from __future__ import annotations

import statistics

from claims_common import RESULTS, claim, ranking, rows, runs, seed_list

CORE = ("rope", "sinusoidal", "learned", "t5", "alibi", "nope")
L = 64
SEEDS = (0, 1, 2)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _seeds(folder: str, value: str = "ppl", split: str | None = None, scaling: str = "none",
           protocol: str = "nonoverlapping") -> dict:
    """(encoding, seed) -> eval_len -> value, one protocol, one split, one scaling."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in rows(folder, protocol=protocol, split=split):
        if r["rope_scaling"] == scaling and r["status"] == "ok" and r.get(value) is not None:
            out.setdefault((r["pe"], r["seed"]), {})[r["eval_len"]] = r[value]
    return out


def _mean(table: dict, pe: str, length: int) -> float:
    return statistics.fmean(table[(pe, s)][length] for s in SEEDS if length in table.get((pe, s), {}))


def _order(table: dict, length: int, seed: int | None = None) -> list[str]:
    """Encodings ranked at one length, best first: in one seed, or by the mean over the seeds."""
    have = [pe for pe in CORE if all(length in table.get((pe, s), {}) for s in SEEDS)]
    if seed is None:
        return ranking({pe: _mean(table, pe, length) for pe in have})
    return ranking({pe: table[(pe, seed)][length] for pe in have})


# -- lr: the search, on validation ---------------------------------------------------------------------------------
def lr_grid() -> dict[str, dict[float, dict[int, float]]]:
    """encoding -> peak learning rate -> seed -> validation perplexity at the training length."""
    from ropebench.run.rundir import RunDir

    out: dict[str, dict[float, dict[int, float]]] = {}
    for r in rows("lr", split="val"):
        if r["eval_len"] == L and r["rope_scaling"] == "none" and r["status"] == "ok":
            lr = float(RunDir(r["run_dir"]).read_config().train.lr)
            out.setdefault(r["pe"], {}).setdefault(lr, {})[r["seed"]] = r["ppl"]
    return out


def best_rate(by_rate: dict[float, dict[int, float]]) -> float:
    """The rate of lowest mean validation perplexity among the rates run in all three seeds."""
    full = {lr: statistics.fmean(v.values()) for lr, v in by_rate.items() if set(v) == set(SEEDS)}
    return min(full, key=full.get)


def _sweep_rates() -> dict[str, float]:
    from omegaconf import OmegaConf

    return dict(OmegaConf.load(RESULTS.parent / "conf" / "sweep" / "compare.yaml").lr_by_encoding)


@claim("lr")
def lr_runs():
    grid = lr_grid()
    n = sum(len(seeds) for by in grid.values() for seeds in by.values())
    text = (f"{n} runs: " + "; ".join(
        f"{pe} " + ", ".join(f"{lr:g} ({len(grid[pe][lr])})" for lr in sorted(grid[pe])) for pe in CORE)
        + " (peak rate (seeds run)).")
    return text, n == len(runs("lr")) and set(grid) == set(CORE)


def _bracket_claim(pe: str):
    def check():
        by = lr_grid()[pe]
        best = best_rate(by)
        below, above = max((r for r in by if r < best), default=None), min((r for r in by if r > best), default=None)
        # Seeds that ran a neighbouring rate, and those in which every neighbour it ran is worse.
        ran = [s for s in by[best] if any(n and s in by[n] for n in (below, above))]
        held = [s for s in ran if all(by[n][s] > by[best][s] for n in (below, above) if n and s in by[n])]

        def rate(r: float | None, where: str) -> str:
            mean = statistics.fmean(by[r].values()) if r else 0.0
            seeds = f"{len(by[r])} seed" + ("s" if len(by[r]) > 1 else "") if r else ""
            return f"{r:g} ({_fmt(mean)}, {seeds}) {where}" if r else f"nothing {where}"

        text = (f"**{pe}**: best at {best:g} ({_fmt(statistics.fmean(by[best].values()))}, 3 seeds), against "
                f"{rate(below, 'below')} and {rate(above, 'above')}; in the seeds that ran a neighbouring rate, "
                f"every neighbour is worse in {len(held)} of {len(ran)} seeds.")
        interior = below is not None and above is not None
        return text, interior and _sweep_rates()[pe] == best, (len(held), len(ran))

    return check


for _pe in CORE:
    claim("lr", name=f"lr_bracket_{_pe}")(_bracket_claim(_pe))


# -- compare: each encoding at its own rate, on test ---------------------------------------------------------------
@claim("compare")
def compare_runs():
    from ropebench.run.rundir import RunDir

    configs = {(c.pe.name, c.seed): c for c in (RunDir(r).read_config() for r in runs("compare"))}
    rates = _sweep_rates()
    at_rate = all(float(c.train.lr) == rates[pe] for (pe, _), c in configs.items())
    text = (f"{len(configs)} runs: the six encodings, seeds 0, 1 and 2, each at its own peak learning rate "
            "(`lr_by_encoding` in `conf/sweep/compare.yaml`, chosen in `results/lr`).")
    return text, set(configs) == {(pe, s) for pe in CORE for s in SEEDS} and at_rate


@claim("compare")
def compare_same_tokens():
    counts = {r["n_tokens"] for r in rows("compare") if r["status"] == "ok"}
    return "Every length scores the same 65,536 test tokens in every run (`n_tokens`).", counts == {65536}


@claim("compare")
def compare_learned_not_applicable():
    past = [r for r in rows("compare") if r["pe"] == "learned" and r["eval_len"] > L]
    ok = bool(past) and all(r["status"].startswith("not_applicable") for r in past)
    return "**learned** has no position past its 64-entry table: every longer length is `not_applicable`.", ok


@claim("compare")
def compare_at_train_len():
    t = _seeds("compare")
    order = _order(t, L)
    held = [s for s in SEEDS if _order(t, L, s)[0] == order[0] and _order(t, L, s)[-1] == order[-1]]
    text = (f"At the training length {order[0]} is best ({_fmt(_mean(t, order[0], L))}) and {order[-1]} worst "
            f"({_fmt(_mean(t, order[-1], L))}), in {len(held)} of 3 seeds.")
    return text, True, (len(held), 3)


@claim("compare")
def compare_order_16x():
    t = _seeds("compare")
    order = _order(t, 16 * L)
    held = [s for s in SEEDS if _order(t, 16 * L, s) == order]
    text = ("At 16× the order of the means, best first, is " + ", ".join(
        f"{pe} {_fmt(_mean(t, pe, 16 * L))}" for pe in order) + f"; a seed has this order in {len(held)} of 3 seeds.")
    return text, True, (len(held), 3)


@claim("compare")
def compare_order_per_seed():
    t = _seeds("compare")
    return "Per seed at 16×: " + "; ".join(f"seed {s}: {', '.join(_order(t, 16 * L, s))}" for s in SEEDS) + ".", True


@claim("compare")
def compare_ends_16x():
    t = _seeds("compare")
    order = _order(t, 16 * L)
    held = [s for s in SEEDS if _order(t, 16 * L, s)[0] == order[0] and _order(t, 16 * L, s)[-1] == order[-1]]
    return f"At 16× {order[0]} is best and {order[-1]} worst in {len(held)} of 3 seeds.", True, (len(held), 3)


@claim("compare")
def compare_sliding_order():
    t, plain = _seeds("compare", protocol="sliding"), _seeds("compare")
    order = _order(t, 16 * L)
    held = [s for s in SEEDS if _order(t, 16 * L, s) == order]
    text = ("With the sliding protocol (16 documents) the order at 16×, best first, is " + ", ".join(order)
            + f" — the same as nonoverlapping's — in {len(held)} of 3 seeds.")
    return text, order == _order(plain, 16 * L), (len(held), 3)


@claim("compare")
def compare_t5_vs_rope():
    t = _seeds("compare")
    lengths = sorted(n for n in t[("rope", 0)] if n > L)
    below = [n for n in lengths if _mean(t, "t5", n) < _mean(t, "rope", n)]
    held = [s for s in SEEDS if t[("t5", s)][16 * L] < t[("rope", s)][16 * L]]
    text = ("**T5 bias** against RoPE past the training length: the mean is lower at "
            + (", ".join(map(str, below)) if below else "no length")
            + f"; at 16× (T5 {_fmt(_mean(t, 't5', 16 * L))}, RoPE {_fmt(_mean(t, 'rope', 16 * L))}) T5 is lower "
            f"in {len(held)} of 3 seeds.")
    return text, True, (len(held), 3)


@claim("compare")
def compare_alibi_flat():
    t = _seeds("compare")
    change = [t[("alibi", s)][16 * L] / t[("alibi", s)][L] - 1 for s in SEEDS]
    text = (f"**ALiBi** changes by {statistics.fmean(change):+.1%} from 1× to 16× "
            f"({_fmt(_mean(t, 'alibi', L))} → {_fmt(_mean(t, 'alibi', 16 * L))}; per seed "
            + ", ".join(f"{c:+.1%}" for c in change) + ").")
    return text, all(abs(c) < 0.1 for c in change)


# -- context: does the model use the context past L? ---------------------------------------------------------------
def _runs_by_seed(folder: str, scaling: str = "none") -> dict[tuple[str, int], list[dict]]:
    """(encoding, seed) -> the run's test rows at one scaling (one protocol)."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in rows(folder):
        if r["rope_scaling"] == scaling:
            out.setdefault((r["pe"], r["seed"]), []).append(r)
    return out


def _lengths(metric: str, folder: str = "compare", scaling: str = "none") -> dict[str, list[int | None]]:
    """encoding -> the hold or use length of each seed's run."""
    from ropebench.report.context import METRICS

    by = _runs_by_seed(folder, scaling)
    return {pe: [METRICS[metric](by[(pe, s)]) for s in SEEDS] for pe in CORE if (pe, 0) in by}


@claim("context")
def context_hold_use():
    hold, use = _lengths("hold"), _lengths("use")
    text = ("Hold length / use length per seed (0, 1, 2): " + "; ".join(
        f"{pe} {seed_list(hold[pe])} / {seed_list(use[pe])}" for pe in CORE if pe != "learned") + ".")
    return text, all(len(v) == 3 for v in (*hold.values(), *use.values()))


def _gain(folder: str = "compare", scaling: str = "none") -> dict:
    return _seeds(folder, "nll_gain", scaling=scaling)


def _no_use_claim(pe: str):
    def check():
        use, gain = _lengths("use"), _gain()
        none = [s for s, v in zip(SEEDS, use[pe]) if v == L]
        largest = max(g for s in SEEDS for n, g in gain[(pe, s)].items() if n > L)
        text = (f"**{pe}** uses no context past L (use length 64: no gain more than 2 standard errors above zero at "
                f"any longer length) in {len(none)} of 3 seeds; its largest gain at any length past L is "
                f"{largest:+.4f} nats/token.")
        return text, True, (len(none), 3)

    return check


for _pe in ("alibi", "rope", "t5", "nope", "sinusoidal"):
    claim("context", name=f"context_no_use_{_pe}")(_no_use_claim(_pe))


def _scaling_gain_claim(scaling: str, length: int):
    def check():
        gain = _gain("rope_scaling", scaling)
        values = [gain[("rope", s)][length] for s in SEEDS]
        ses = {s: r["gain_se"] for s in SEEDS for r in _runs_by_seed("rope_scaling", scaling)[("rope", s)]
               if r["eval_len"] == length}
        from ropebench.eval.crop import gain_is_significant

        used = [s for s, g in zip(SEEDS, values) if gain_is_significant(g, ses[s])]
        text = (f"With {scaling} at evaluation, the gain at {length // L}× is "
                + ", ".join(f"{g:+.4f}" for g in values) + f" nats/token (seeds 0, 1, 2): more than 2 standard "
                f"errors above zero in {len(used)} of 3 seeds.")
        return text, True, (len(used), 3)

    return check


for _scaling in ("yarn", "ntk"):
    for _length in (2 * L, 4 * L):
        claim("context", name=f"context_{_scaling}_{_length}")(_scaling_gain_claim(_scaling, _length))


def _probe_rows() -> list[dict]:
    import csv

    out = []
    for run in runs("compare"):
        with open(run / "probe.csv", newline="") as f:
            out += [dict(r, seed=run.name.rsplit("seed=", 1)[1]) for r in csv.DictReader(f) if r["status"] == "ok"]
    return out


@claim("context")
def context_probes():
    probe = _probe_rows()
    lengths = sorted({int(r["eval_len"]) for r in probe})
    chance = {float(r["chance"]) for r in probe}

    def acc(pe: str, n: int) -> str:
        values = [float(r["accuracy"]) for r in probe if r["pe"] == pe and int(r["eval_len"]) == n]
        return f"{statistics.fmean(values):.2f}" if values else "n/a"

    no_exact = [s for s in SEEDS if all(float(r["exact_accuracy"]) == 0 for r in probe if r["seed"] == str(s))]
    text = ("Retrieval probes (`results/compare/runs/*/probe.csv`: niah_single and vt, K = 6 candidates, "
            f"chance {min(chance):.2f}, 3 depths × 6 trials per task, length and seed), mean likelihood accuracy at "
            f"{' / '.join(map(str, lengths))} tokens: "
            + "; ".join(f"{pe} {' / '.join(acc(pe, n) for n in lengths)}" for pe in CORE)
            + f". Greedy exact accuracy is 0 at every length, task and depth, for every encoding, in {len(no_exact)} "
            "of 3 seeds.")
    return text, len(chance) == 1 and {r["task"] for r in probe} == {"niah_single", "vt"}, (len(no_exact), 3)


@claim("context", measurement=True)
def context_crop_cost():
    """The cropped baseline's cost against the plain evaluation (crop_cost.json: `ropebench bench eval`)."""
    import json

    bench = json.loads((RESULTS / "context" / "crop_cost.json").read_text())
    measured = [r for r in bench["rows"] if r["status"] == "ok" and "crop_ratio" in r]
    worst = max(measured, key=lambda r: r["crop_ratio"])
    lengths = sorted({r["eval_len"] for r in measured})
    text = (f"The cropped baseline costs {min(r['crop_ratio'] for r in measured):.2f}–{worst['crop_ratio']:.2f}× the "
            f"plain evaluation at the same length ({', '.join(sorted({r['encoding'] for r in measured}))} at "
            f"{', '.join(map(str, lengths))} tokens, L = {bench['train_len']}, {bench['n_tokens']:,} scored tokens "
            f"per length, median of {bench['reps']} rounds; the largest: {worst['encoding']} at {worst['eval_len']}).")
    return text, worst["crop_ratio"] <= 4 and len(measured) >= 6
