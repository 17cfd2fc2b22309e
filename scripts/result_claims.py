"""The claims of results/*/README.md, one function each, computed from the committed CSVs (see check_results.py)."""

from __future__ import annotations

import math
import statistics

import claims_fair  # noqa: E402,F401  (registers the fair-baseline and context-use claims)
import claims_passkey_extend  # noqa: E402,F401  (registers the passkey and extend claims)
import claims_throughput  # noqa: E402,F401  (registers the throughput claims)
from claims_common import RESULTS, claim, means, per_seed, ranking, rows, runs, table_matches

CORE = ("rope", "sinusoidal", "learned", "t5", "alibi", "nope")


def _table_claim(folder: str):
    """Each folder's table.md is what `ropebench table` prints for its runs, and its README quotes it whole."""
    def check():
        quoted = (RESULTS / folder / "table.md").read_text().strip() in (RESULTS / folder / "README.md").read_text()
        return f"`table.md` is exactly what `ropebench table results/{folder}/runs` prints.", \
            table_matches(folder) and quoted

    check.__name__ = f"{folder}_table"
    return check


for _folder in ("compare", "rope_scaling", "rotate_values", "lr"):
    claim(_folder)(_table_claim(_folder))


def _fmt(x: float) -> str:
    return f"{x:.2f}"


# -- compare -----------------------------------------------------------------------------------------------------
def _compare(folder: str = "compare") -> dict[str, dict[int, float]]:
    return means(folder)




@claim("compare")
def compare_seeds():
    found = {(pe, seed) for pe, seed in per_seed("compare")}
    ok = found == {(pe, s) for pe in CORE for s in (0, 1, 2)}
    return f"{len(runs('compare'))} runs: the six encodings, seeds 0, 1 and 2.", ok and len(runs("compare")) == 18


@claim("compare")
def compare_same_tokens():
    counts = {r["n_tokens"] for r in rows("compare") if r["status"] == "ok"}
    ok = counts == {65536}
    return "Every length scores the same 65,536 tokens in every run (`n_tokens`).", ok


@claim("compare")
def compare_learned_not_applicable():
    past = [r for r in rows("compare") if r["pe"] == "learned" and r["eval_len"] > 64]
    ok = past and all(r["status"].startswith("not_applicable") for r in past)
    return "**learned** has no position past its 64-entry table: every longer length is `not_applicable`.", ok


def _order_at(length: int, table: dict[str, dict[int, float]]) -> list[str]:
    return ranking({pe: table[pe][length] for pe in CORE if pe in table and length in table[pe]})


@claim("compare")
def compare_order_16x():
    m = _compare()
    order = _order_at(1024, m)
    text = "At 16× the order, best first, is " + ", ".join(f"{pe} {_fmt(m[pe][1024])}" for pe in order) + "."
    return text, len(order) == 5


@claim("compare")
def compare_order_every_seed():
    seeds = per_seed("compare")
    orders = {s: ranking({pe: seeds[(pe, s)][1024] for pe in CORE if pe != "learned"}) for s in (0, 1, 2)}
    text = "Per seed at 16×: " + "; ".join(f"seed {s}: {', '.join(o)}" for s, o in orders.items()) + "."
    return text, True


@claim("compare")
def compare_ends_agree():
    seeds = per_seed("compare")
    orders = [ranking({pe: seeds[(pe, s)][1024] for pe in CORE if pe != "learned"}) for s in (0, 1, 2)]
    ok = all(o[0] == "alibi" and o[-1] == "sinusoidal" for o in orders)
    return "In every seed ALiBi is best and sinusoidal worst at 16×; the middle three change places.", ok


@claim("compare")
def compare_rope_holds():
    m = _compare()["rope"]
    text = (f"**RoPE** holds to 1.5× ({_fmt(m[64])} → {_fmt(m[96])}), then climbs ({_fmt(m[128])} at 2×, "
            f"{_fmt(m[1024])} at 16×), with the widest spread across seeds.")
    widest = max(aggregate_spread("compare", 1024), key=lambda kv: kv[1])[0]
    return text, m[96] / m[64] < 1.02 and widest == "rope"


def aggregate_spread(folder: str, length: int) -> list[tuple[str, float]]:
    from claims_common import aggregate

    return [(s.label, s.points[length].std) for s in aggregate(rows(folder)) if length in s.points]


@claim("compare")
def compare_best_at_L():
    m = _compare()
    order = _order_at(64, m)
    return f"At the training length {order[0]} is best ({_fmt(m[order[0]][64])}) and {order[-1]} worst " \
           f"({_fmt(m[order[-1]][64])}).", True


@claim("compare")
def compare_alibi_flat():
    m = _compare()["alibi"]
    change = m[1024] / m[64] - 1
    return f"**ALiBi** changes by {change:+.1%} from 1× to 16× ({_fmt(m[64])} → {_fmt(m[1024])}).", abs(change) < 0.1


@claim("compare")
def compare_sinusoidal_worst_from():
    m = _compare()
    lengths = sorted(m["sinusoidal"])
    worst = [L for L in lengths if _order_at(L, m)[-1] == "sinusoidal"]
    start = next(L for L in lengths if all(x in worst for x in lengths if x >= L))
    text = (f"**sinusoidal** is the worst encoding at every length from {start} tokens on "
            f"({start / 64:g}× the training length); below that, " +
            ", ".join(f"at {L}: {_order_at(L, m)[-1]} ({_fmt(m[_order_at(L, m)[-1]][L])}) vs sinusoidal "
                      f"({_fmt(m['sinusoidal'][L])})" for L in lengths if L < start and L not in worst) + ".")
    return text, True


@claim("compare")
def compare_rope_vs_t5():
    m = _compare()
    lengths = [L for L in sorted(m["rope"]) if L > 64]
    t5_better = [L for L in lengths if m["t5"][L] < m["rope"][L]]
    text = ("**T5 bias** is below RoPE at " + (", ".join(map(str, t5_better)) if t5_better else "no length") +
            f" past the training length (16×: T5 {_fmt(m['t5'][1024])}, RoPE {_fmt(m['rope'][1024])}).")
    return text, True


def _isfinite(x) -> bool:
    return x is not None and not math.isnan(x)


__all__ = ["RESULTS"]


# -- rope_scaling ------------------------------------------------------------------------------------------------
def _scaled() -> dict[str, dict[int, float]]:
    """label (rope, rope+linear, ...) -> eval_len -> mean ppl over the three seeds."""
    return means("rope_scaling")




@claim("rope_scaling")
def scaling_at_4x():
    m = _scaled()
    order = ranking({label: m[label][256] for label in m})
    return "At 4× (256 tokens), best first: " + ", ".join(f"{label} {_fmt(m[label][256])}" for label in order) + \
        ".", True


@claim("rope_scaling")
def scaling_dynamic_equals_ntk():
    by_key = {(r["run_dir"], r["eval_len"], r["rope_scaling"]): r["ppl"] for r in rows("rope_scaling")}
    pairs = [(v, by_key.get((run, L, "ntk"))) for (run, L, label), v in by_key.items() if label == "dynamic"]
    same = len(pairs) == 21 and all(d == n for d, n in pairs)  # 7 lengths x 3 seeds
    return ("Dynamic NTK without `--factor` (HF's factor 1, growing with the length) gives exactly NTK-aware "
            "scaling's perplexity at every length and seed, as it must."), same


@claim("rope_scaling")
def scaling_linear_worse():
    m = _scaled()
    worse = all(m["rope+linear"][L] > m["rope"][L] for L in m["rope"] if L > 64)
    return (f"Linear interpolation (PI) without fine-tuning is worse than plain RoPE at every length past the "
            f"training length ({_fmt(m['rope+linear'][256])} vs {_fmt(m['rope'][256])} at 4×)."), worse


@claim("rope_scaling")
def scaling_yarn_per_seed():
    seeds = {}
    for r in rows("rope_scaling"):
        if r["eval_len"] == 1024 and r["status"] == "ok":
            seeds.setdefault(r["seed"], {})[r["rope_scaling"]] = r["ppl"]
    better = [s for s, v in sorted(seeds.items()) if v["yarn"] < v["none"]]
    return f"YaRN is below plain RoPE at 16× in {len(better)} of {len(seeds)} seeds.", len(seeds) == 3


# -- rotate_values -----------------------------------------------------------------------------------------------
def _rotated_vs_plain() -> dict[int, dict[str, dict[int, float]]]:
    """seed -> "rotated" / "plain" -> eval_len -> ppl."""
    from ropebench.run.rundir import RunDir

    out: dict[int, dict[str, dict[int, float]]] = {}
    for r in rows("rotate_values"):
        if r["rope_scaling"] == "none" and r["status"] == "ok":
            rotated = bool(RunDir(r["run_dir"]).read_config().pe.rotate_values)
            out.setdefault(r["seed"], {}).setdefault("rotated" if rotated else "plain", {})[r["eval_len"]] = r["ppl"]
    return out




@claim("rotate_values")
def rotv_worse_everywhere():
    data = _rotated_vs_plain()
    worse = all(v["rotated"][L] > v["plain"][L] for v in data.values() for L in (64, 256, 1024))
    return "Rotating the values is worse than RoPE as published at 1×, 4× and 16× in every seed.", \
        worse and len(data) == 3


@claim("rotate_values")
def rotv_ratios():
    data = _rotated_vs_plain()
    ratio = {L: statistics.fmean(v["rotated"][L] / v["plain"][L] for v in data.values()) for L in (64, 256, 1024)}
    return ("Mean perplexity ratio rotated / published: " +
            ", ".join(f"{ratio[L]:.2f} at {L // 64}×" for L in (64, 256, 1024)) + "."), True


# -- lr ----------------------------------------------------------------------------------------------------------
def _by_lr() -> dict[str, dict[float, dict[int, float]]]:
    """encoding -> peak learning rate -> eval_len -> ppl (seed 0)."""
    from ropebench.run.rundir import RunDir

    out: dict[str, dict[float, dict[int, float]]] = {}
    for r in rows("lr"):
        if r["rope_scaling"] == "none" and r["status"] == "ok":
            lr = float(RunDir(r["run_dir"]).read_config().train.lr)
            out.setdefault(r["pe"], {}).setdefault(lr, {})[r["eval_len"]] = r["ppl"]
    return out


def _best_lr() -> dict[str, float]:
    return {pe: min(by, key=lambda lr: by[lr][64]) for pe, by in _by_lr().items()}




@claim("lr")
def lr_best():
    by, best = _by_lr(), _best_lr()
    ok = set(by) == set(CORE) and all(len(v) == 3 for v in by.values())
    return ("Best peak learning rate by perplexity at the training length: " +
            ", ".join(f"{pe} {best[pe]:g} ({_fmt(by[pe][best[pe]][64])})" for pe in CORE if pe in best) + "."), ok


def _order(lengths_of: dict[str, dict[int, float]], length: int) -> list[str]:
    return ranking({pe: v.get(length, math.nan) for pe, v in lengths_of.items()})


@claim("lr")
def lr_order_holds():
    by, best = _by_lr(), _best_lr()
    at_best = {pe: by[pe][best[pe]] for pe in by}
    at_default = {pe: by[pe][0.002] for pe in by}
    lines = []
    for length in (256, 1024):
        a, b = _order(at_best, length), _order(at_default, length)
        lines.append(f"at {length // 64}× the order at each encoding's best rate is {', '.join(a)} "
                     f"({'the same as' if a == b else 'unlike'} at 2e-3: {', '.join(b)})")
    return "Past the training length, " + "; ".join(lines) + ".", True


@claim("lr")
def lr_edge():
    by, best = _by_lr(), _best_lr()
    at_edge = all(best[pe] == max(by[pe]) for pe in best)
    word = "the largest rate tried, 4e-3, for every encoding" if at_edge else "inside the searched range"
    return f"The best rate is {word}: the search does not bracket every optimum.", at_edge


@claim("lr")
def lr_ends_hold():
    by = _by_lr()
    rates = sorted({lr for v in by.values() for lr in v})
    ok = all(_order({pe: by[pe][lr] for pe in by}, L)[0] == "alibi"
             and _order({pe: by[pe][lr] for pe in by}, L)[-1] == "sinusoidal" for lr in rates for L in (256, 1024))
    return "At every rate tried, ALiBi is best and sinusoidal worst at 4× and at 16×.", ok
