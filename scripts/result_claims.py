"""The claims of results/*/README.md, one function each, computed from the committed CSVs (see check_results.py)."""

from __future__ import annotations

import math
import statistics

import claims_compare  # noqa: E402,F401  (registers the lr, compare and context claims)
import claims_extend_context  # noqa: E402,F401  (registers the extend_context claims)
import claims_fair  # noqa: E402,F401  (registers the learning-rate multiple claims)
import claims_long  # noqa: E402,F401  (registers the compare_long claims: which orderings survive)
import claims_methods  # noqa: E402,F401  (registers the methods claims)
import claims_passkey_extend  # noqa: E402,F401  (registers the passkey and extend claims)
import claims_tasks  # noqa: E402,F401  (registers the task-suite claims)
import claims_throughput  # noqa: E402,F401  (registers the throughput claims)
from claims_common import RESULTS, claim, means, ranking, rows, table_matches

CORE = ("rope", "sinusoidal", "learned", "t5", "alibi", "nope")


def _table_claim(folder: str):
    """Each folder's table.md is what `ropebench table` prints for its runs, and its README quotes it whole."""
    def check():
        quoted = (RESULTS / folder / "table.md").read_text().strip() in (RESULTS / folder / "README.md").read_text()
        return f"`table.md` is exactly what `ropebench table results/{folder}/runs` prints.", \
            table_matches(folder) and quoted

    return check


for _folder in ("compare", "rope_scaling", "rotate_values", "lr"):
    claim(_folder, name=f"{_folder}_table")(_table_claim(_folder))


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _isfinite(x) -> bool:
    return x is not None and not math.isnan(x)


__all__ = ["RESULTS"]


# -- rope_scaling ------------------------------------------------------------------------------------------------
def _scaled() -> dict[str, dict[int, float]]:
    """label (rope, rope+linear, ...) -> eval_len -> mean ppl over the three seeds."""
    return means("rope_scaling")




def _scaled_seeds() -> dict[int, dict[str, dict[int, float]]]:
    """seed -> label (rope, rope+linear, ...) -> eval_len -> ppl."""
    out: dict[int, dict[str, dict[int, float]]] = {}
    for r in rows("rope_scaling"):
        if r["status"] == "ok":
            label = "rope" if r["rope_scaling"] == "none" else f"rope+{r['rope_scaling']}"
            out.setdefault(r["seed"], {}).setdefault(label, {})[r["eval_len"]] = r["ppl"]
    return out


@claim("rope_scaling")
def scaling_at_4x():
    m, seeds = _scaled(), _scaled_seeds()
    order = ranking({label: m[label][256] for label in m})
    # Non-decreasing along the means' order: dynamic ties NTK to the last digit (see below).
    held = [s for s, v in seeds.items() if all(v[a][256] <= v[b][256] for a, b in zip(order, order[1:]))]
    return ("At 4× (256 tokens), the order of the means, best first: " + ", ".join(
        f"{label} {_fmt(m[label][256])}" for label in order) + f"; a seed has this order in {len(held)} of "
        f"{len(seeds)} seeds."), True, (len(held), len(seeds))


@claim("rope_scaling")
def scaling_dynamic_equals_ntk():
    by_key = {(r["run_dir"], r["eval_len"], r["rope_scaling"]): r["ppl"] for r in rows("rope_scaling")}
    pairs = [(v, by_key.get((run, L, "ntk"))) for (run, L, label), v in by_key.items() if label == "dynamic"]
    same = len(pairs) == 21 and all(d == n for d, n in pairs)  # 7 lengths x 3 seeds
    return ("Dynamic NTK without `--factor` (HF's factor 1, growing with the length) gives exactly NTK-aware "
            "scaling's perplexity at every length and seed, as it must."), same


@claim("rope_scaling")
def scaling_linear_worse():
    m, seeds = _scaled(), _scaled_seeds()
    held = [s for s, v in seeds.items() if all(v["rope+linear"][n] > v["rope"][n] for n in v["rope"] if n > 64)]
    return (f"Linear interpolation (PI) without fine-tuning is worse than plain RoPE at every length past the "
            f"training length ({_fmt(m['rope+linear'][256])} vs {_fmt(m['rope'][256])} at 4×), in {len(held)} of "
            f"{len(seeds)} seeds."), True, (len(held), len(seeds))


@claim("rope_scaling")
def scaling_yarn_per_seed():
    seeds = _scaled_seeds()
    better = [s for s, v in sorted(seeds.items()) if v["rope+yarn"][1024] < v["rope"][1024]]
    return f"YaRN is below plain RoPE at 16× in {len(better)} of {len(seeds)} seeds.", len(seeds) == 3, \
        (len(better), len(seeds))


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
    worse = [seed for seed, v in data.items() if all(v["rotated"][L] > v["plain"][L] for L in (64, 256, 1024))]
    return "Rotating the values is worse than RoPE as published at 1×, 4× and 16× in every seed.", \
        len(worse) == len(data) == 3, (len(worse), len(data))


@claim("rotate_values")
def rotv_ratios():
    data = _rotated_vs_plain()
    ratio = {L: statistics.fmean(v["rotated"][L] / v["plain"][L] for v in data.values()) for L in (64, 256, 1024)}
    return ("Mean perplexity ratio rotated / published: " +
            ", ".join(f"{ratio[L]:.2f} at {L // 64}×" for L in (64, 256, 1024)) + "."), True
