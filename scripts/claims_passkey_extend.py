"""The claims of results/passkey/README.md and results/extend/README.md, recomputed from the committed CSVs."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict

from claims_common import RESULTS, claim, in_readme  # noqa: F401

PK_LENGTHS = (64, 128, 256, 512)
PI, YARN = 0.2, 0.8  # effective context: mean accuracy over depths >= 20% (PI) / 80% (YaRN) at every length up to L


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _config_value(run, key: str) -> str:
    for line in (run / "config.yaml").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def passkey_accuracy() -> dict[tuple[str, int, str], dict[int, list[float]]]:
    """(encoding, seed, rope_scaling) -> length -> accuracies over depths."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for run in sorted((RESULTS / "passkey" / "runs").iterdir()):
        pe, seed = run.name.split(",")[0].removeprefix("pe="), int(_config_value(run, "seed"))
        for r in _csv(run / "passkey.csv"):
            assert r["status"] == "ok", (run, r)
            out[(pe, seed, r["rope_scaling"])][int(r["eval_len"])].append(float(r["accuracy"]))
    return out


def effective(by_len: dict[int, list[float]], threshold: float) -> int | None:
    best = None
    for length in sorted(by_len):
        if statistics.fmean(by_len[length]) < threshold:
            break
        best = length
    return best


def pooled(pe: str, scaling: str = "none") -> dict[int, list[float]]:
    merged: dict[int, list[float]] = defaultdict(list)
    for (name, _, label), by_len in passkey_accuracy().items():
        if name == pe and label == scaling:
            for length, values in by_len.items():
                merged[length] += values
    return merged


def _eff_text(value: int | None) -> str:
    return "none" if value is None else str(value)


@claim("passkey")
def passkey_runs():
    acc = passkey_accuracy()
    found = sorted({(pe, seed) for pe, seed, _ in acc})
    ok = found == [(pe, s) for pe in ("alibi", "nope", "rope") for s in (0, 1, 2)]
    trials = {r["trials"] for run in (RESULTS / "passkey" / "runs").iterdir() for r in _csv(run / "passkey.csv")}
    return "9 runs: RoPE, ALiBi and NoPE, seeds 0, 1 and 2, each scored on 32 keys at each of 5 depths per length.", \
        ok and trials == {"32"} and all(len(v) == 5 for by_len in acc.values() for v in by_len.values())


@claim("passkey")
def passkey_rope_cliff():
    acc = passkey_accuracy()
    rope = [acc[("rope", s, "none")] for s in (0, 1, 2)]
    ok = all(min(r[64]) == 1.0 and max(max(r[L]) for L in PK_LENGTHS[1:]) == 0.0 for r in rope)
    return ("Plain RoPE retrieves every key at the training length (64) and none at 128, 256 or 512, in every "
            "seed and at every depth."), ok


@claim("passkey")
def passkey_effective_pooled():
    parts = []
    for pe, scaling in (("rope", "none"), ("rope", "dynamic"), ("rope", "yarn"), ("nope", "none"), ("alibi", "none")):
        by_len = pooled(pe, scaling)
        name = pe if scaling == "none" else f"{pe}+{scaling}"
        parts.append(f"{name} {_eff_text(effective(by_len, PI))} / {_eff_text(effective(by_len, YARN))}")
    return "Effective context over the three seeds pooled (PI's >= 20% / YaRN's >= 80%): " + "; ".join(parts) + \
        ".", True


@claim("passkey")
def passkey_alibi_seeds():
    acc = passkey_accuracy()
    parts = [f"seed {s}: {_eff_text(effective(acc[('alibi', s, 'none')], PI))} / "
             f"{_eff_text(effective(acc[('alibi', s, 'none')], YARN))}" for s in (0, 1, 2)]
    at64 = [statistics.fmean(acc[("alibi", s, "none")][64]) for s in (0, 1, 2)]
    text = ("ALiBi's retrieval differs widely between seeds — effective context (PI / YaRN) " + "; ".join(parts) +
            f" — and seed 0 retrieves only {at64[0]:.0%} of keys even at the training length.")
    return text, min(at64) < 0.8 <= max(at64)


@claim("passkey")
def passkey_yarn_beats_dynamic():
    acc = passkey_accuracy()
    wins = [s for s in (0, 1, 2) if statistics.fmean(acc[("rope", s, "yarn")][128])
            > statistics.fmean(acc[("rope", s, "dynamic")][128])]
    means = {s: statistics.fmean(acc[("rope", s, "yarn")][128]) for s in (0, 1, 2)}
    text = (f"At 128 tokens YaRN retrieves more keys than dynamic NTK in {len(wins)} of 3 seeds (YaRN: "
            + ", ".join(f"{means[s]:.0%}" for s in (0, 1, 2)) + "), yet stays below 80% in every seed.")
    return text, len(wins) == 3 and max(means.values()) < 0.8, (len(wins), 3)


# -- extend ------------------------------------------------------------------------------------------------------
# Run directories are named by the sweep: base runs `pe=rope,seed=0`, extensions `extend=yarn,seed=0,train.steps=50`
# (conf/extend/*.yaml). Each run's rows evaluated as trained carry its own scaling label.
EXT_LABELS = {"linear": "linear(factor=4,original_max_position_embeddings=64)",
              "ntk": "ntk(factor=4,original_max_position_embeddings=64)",
              "yarn": "yarn(factor=4,original_max_position_embeddings=64)",
              "pose_yarn": "yarn(factor=4,original_max_position_embeddings=64)"}
ALL_METHODS = ("direct", "linear", "ntk", "yarn", "pose_yarn", "alibi", "learned")
NAMES = {"direct": "direct", "linear": "PI", "ntk": "NTK", "yarn": "YaRN", "pose_yarn": "PoSE+YaRN",
         "alibi": "ALiBi direct", "learned": "learned interpolate"}


def _name_fields(run) -> dict[str, str]:
    return dict(part.split("=", 1) for part in run.name.split(","))


def ext_ppl(folder: str = "extend") -> dict[tuple[str, int, int], dict[int, float]]:
    """(method, steps, seed) -> length -> perplexity as trained; base runs are ('base:<pe>', -1, seed)."""
    out: dict = {}
    for run in sorted((RESULTS / folder / "runs").iterdir()):
        f = _name_fields(run)
        if "extend" in f:
            key, label = (f["extend"], int(f["train.steps"]), int(f["seed"])), EXT_LABELS.get(f["extend"], "none")
        else:
            key, label = (f"base:{f['pe']}", -1, int(f["seed"])), "none"
        out[key] = {int(r["eval_len"]): float(r["ppl"]) for r in _csv(run / "eval_length.csv")
                    if r["status"] == "ok" and r["rope_scaling"] == label and r["protocol"] == "nonoverlapping"}
    return out


def ext_mean(method: str, steps: int, length: int) -> float:
    values = [v[length] for (m, s, _), v in ext_ppl().items() if m == method and s == steps and length in v]
    assert len(values) == 3, (method, steps, length, values)
    return statistics.fmean(values)


def ext_seeds(method: str, steps: int, length: int) -> dict[int, float]:
    return {seed: v[length] for (m, s, seed), v in ext_ppl().items() if m == method and s == steps and length in v}


# -- hf ----------------------------------------------------------------------------------------------------------
@claim("hf")
def hf_equals_native():
    def rows(path):
        return {(r["eval_len"], r["rope_scaling"]): r for r in _csv(path / "eval_length.csv")}

    native, hf = rows(RESULTS / "hf" / "runs" / "native"), rows(RESULTS / "hf" / "hf_eval")
    same = sorted(native) == sorted(hf) and all(native[k]["n_tokens"] == hf[k]["n_tokens"] == "65536" for k in native)
    worst = max(abs(float(native[k]["nll"]) - float(hf[k]["nll"])) for k in native)
    lengths = sorted({int(length) for length, _ in native})
    text = (f"At each of the {len(lengths)} lengths ({', '.join(map(str, lengths))}), plain and with YaRN, the HF path "
            f"scores the same 65,536 tokens as the native evaluation, and the mean NLL differs by at most "
            f"{worst:.1e} nats.")
    return text, same and len(native) == 2 * len(lengths) and worst < 1e-5


def _f(x: float) -> str:
    return f"{x:.2f}"


@claim("extend")
def extend_runs():
    ppl = ext_ppl()
    bases = {(m, seed) for m, s, seed in ppl if s == -1}
    ext = {(m, s, seed) for m, s, seed in ppl if s >= 0}
    ok = bases == {(f"base:{pe}", seed) for pe in ("rope", "alibi", "learned") for seed in (0, 1, 2)} and \
        ext == {(m, s, seed) for m in ALL_METHODS for s in (0, 50, 200) for seed in (0, 1, 2)}
    return ("72 runs: for each of seeds 0, 1 and 2, the RoPE, ALiBi and learned base runs and 7 methods × "
            "{0, 50, 200} fine-tuning steps."), ok and len(ppl) == 72


@claim("extend")
def extend_same_tokens():
    counts = {r["n_tokens"] for run in (RESULTS / "extend" / "runs").iterdir() for r in _csv(run / "eval_length.csv")
              if r["status"] == "ok"}
    return "Every length scores the same 65,536 tokens in every run.", counts == {"65536"}


@claim("extend")
def extend_step_zero():
    ppl = ext_ppl()
    same = all(ppl[("direct", 0, s)] == ppl[("base:rope", -1, s)] and ppl[("pose_yarn", 0, s)] == ppl[("yarn", 0, s)]
               for s in (0, 1, 2))
    return ("At step 0, direct fine-tuning gives exactly the RoPE base run's perplexity, and PoSE+YaRN exactly "
            "YaRN's, at every length and seed (the same weights, the same scaling)."), same


@claim("extend")
def extend_pi_recovers():
    pi = {s: ext_mean("linear", s, 256) for s in (0, 50, 200)}
    base = statistics.fmean(v[64] for (m, _, _), v in ext_ppl().items() if m == "base:rope")
    text = (f"PI at 256 tokens (4×): {_f(pi[0])} at step 0, {_f(pi[50])} after 50 steps and {_f(pi[200])} after "
            f"200, against {_f(base)} for the base model at its own 64 tokens.")
    return text, pi[0] > pi[50] > pi[200] and pi[200] < 1.05 * base


@claim("extend")
def extend_direct_vs_pi():
    budgets = (50, 200)
    seeds = [s for s in (0, 1, 2) if all(ext_seeds("direct", b, 256)[s] < ext_seeds("linear", b, 256)[s]
                                         for b in budgets)]
    text = (f"At 256 tokens direct fine-tuning is below PI after 50 steps ({_f(ext_mean('direct', 50, 256))} vs "
            f"{_f(ext_mean('linear', 50, 256))}) and after 200 ({_f(ext_mean('direct', 200, 256))} vs "
            f"{_f(ext_mean('linear', 200, 256))}), in {len(seeds)} of 3 seeds at both budgets.")
    return text, len(seeds) == 3, (len(seeds), 3)


def _order_2048(steps: int) -> list[tuple[str, float]]:
    methods = [m for m in ALL_METHODS if m != "learned"]
    return sorted(((NAMES[m], ext_mean(m, steps, 2048)) for m in methods), key=lambda kv: kv[1])


@claim("extend")
def extend_order_beyond():
    order = _order_2048(200)
    codes = {NAMES[m]: m for m in ALL_METHODS}
    means_order = [codes[name] for name, _ in order]
    held = [seed for seed in (0, 1, 2)
            if sorted(means_order, key=lambda m: ext_seeds(m, 200, 2048)[seed]) == means_order]
    text = ("After 200 steps, at 2048 tokens (8× the fine-tuned length) the order of the means, best first, is "
            + ", ".join(f"{name} {_f(v)}" for name, v in order) + f"; this order holds in {len(held)} of 3 seeds.")
    return text, True, (len(held), 3)


@claim("extend")
def extend_yarn_vs_pi_beyond():
    def holds(s: int) -> bool:
        yarn, pi = (ext_seeds(m, 200, 2048)[s] for m in ("yarn", "linear"))
        return ext_seeds("yarn", 200, 1024)[s] < ext_seeds("linear", 200, 1024)[s] and yarn < pi and \
            max(ext_seeds("direct", 200, 2048)[s], ext_seeds("ntk", 200, 2048)[s]) < yarn

    wins = [s for s in (0, 1, 2) if holds(s)]
    text = (f"Past the fine-tuned length, after 200 steps, YaRN is below PI at 1024 and 2048 tokens "
            f"({_f(ext_mean('yarn', 200, 2048))} vs {_f(ext_mean('linear', 200, 2048))} at 2048) and direct "
            f"fine-tuning ({_f(ext_mean('direct', 200, 2048))}) and NTK ({_f(ext_mean('ntk', 200, 2048))}) are lower "
            f"than both at 2048, in {len(wins)} of 3 seeds.")
    return text, len(wins) >= 2, (len(wins), 3)


@claim("extend")
def extend_pose():
    text = (f"PoSE+YaRN, on a quarter of YaRN's training tokens (64-token windows whose positions skip over 256), "
            f"reaches {_f(ext_mean('pose_yarn', 50, 256))} at 256 tokens after 50 steps and "
            f"{_f(ext_mean('pose_yarn', 200, 256))} after 200, against YaRN's {_f(ext_mean('yarn', 50, 256))} and "
            f"{_f(ext_mean('yarn', 200, 256))}.")
    ok = ext_mean("pose_yarn", 200, 256) < ext_mean("yarn", 0, 256) and ext_mean("pose_yarn", 200, 256) > \
        ext_mean("yarn", 200, 256)
    return text, ok


@claim("extend")
def extend_more_steps_worse_beyond():
    rope_methods = ("direct", "linear", "ntk", "yarn", "pose_yarn")
    rising = [m for m in rope_methods if ext_mean(m, 200, 2048) > ext_mean(m, 50, 2048)]
    text = ("From 50 to 200 steps the perplexity at 2048 tokens rises for " + ", ".join(NAMES[m] for m in rising)
            + f" ({len(rising)} of {len(rope_methods)} RoPE methods) while it falls at 256.")
    falls = all(ext_mean(m, 200, 256) < ext_mean(m, 50, 256) for m in rope_methods)
    return text, bool(rising) and falls


@claim("extend")
def extend_learned():
    text = (f"Learned positions interpolated from 64 to 256 rows give {_f(ext_mean('learned', 0, 256))} at 256 "
            f"tokens before fine-tuning and {_f(ext_mean('learned', 200, 256))} after 200 steps; the table stops at "
            "256, so longer lengths are not applicable.")
    past = all(r["status"].startswith("not_applicable") for run in (RESULTS / "extend" / "runs").glob("extend=learned*")
               for r in _csv(run / "eval_length.csv") if int(r["eval_len"]) > 256)
    return text, past and ext_mean("learned", 200, 256) < ext_mean("learned", 0, 256)


def _report_is_the_runs(folder: str, value: str):
    def check():
        from ropebench.report.extend import markdown_table, summary_rows

        runs = sorted((RESULTS / folder / "runs").iterdir())
        table = markdown_table(summary_rows(runs), value)
        committed = (RESULTS / folder / "extend.md").read_text()
        return "`extend.md` is exactly what the extension report computes from `runs/`.", \
            table.strip() == committed.strip() and table.strip() in (RESULTS / folder / "README.md").read_text()

    return check


for _folder, _value in (("extend", "ppl"), ("extend_passkey", "passkey")):
    claim(_folder, name=f"{_folder}_report")(_report_is_the_runs(_folder, _value))


@claim("extend")
def extend_pi_worst_at_step_zero():
    lengths = (64, 128, 256, 512, 1024, 2048)
    others = [m for m in ALL_METHODS if m not in ("linear", "learned")]
    worst = [s for s in (0, 1, 2) if all(ext_seeds("linear", 0, n)[s] > max(ext_seeds(m, 0, n)[s] for m in others)
                                         for n in lengths)]
    return f"Without training (step 0) PI is the worst method at every length, in {len(worst)} of 3 seeds.", \
        len(worst) >= 2, (len(worst), 3)


@claim("extend")
def extend_alibi_flat():
    flat = all(ext_mean("alibi", s, 2048) <= ext_mean("alibi", s, 256) for s in (0, 50, 200))
    return "ALiBi's perplexity does not rise from 256 to 2048 tokens at any budget.", flat


# -- extend_passkey ---------------------------------------------------------------------------------------------
PK_METHODS = ("direct", "linear", "yarn", "alibi", "nope")
PK_NAMES = {"direct": "direct", "linear": "PI", "yarn": "YaRN", "alibi": "ALiBi direct", "nope": "NoPE direct"}


def ext_passkey() -> dict[tuple[str, int, int], dict[int, float]]:
    """(method, steps, seed) -> length -> accuracy averaged over depths, as trained; base runs ('base:<pe>', -1)."""
    out: dict = {}
    for run in sorted((RESULTS / "extend_passkey" / "runs").iterdir()):
        f = _name_fields(run)
        if "extend" in f:
            key, label = (f["extend"], int(f["train.steps"]), int(f["seed"])), EXT_LABELS.get(f["extend"], "none")
        else:
            key, label = (f"base:{f['pe']}", -1, int(f["seed"])), "none"
        by_len: dict[int, list[float]] = defaultdict(list)
        for r in _csv(run / "passkey.csv"):
            if r["rope_scaling"] == label:
                assert r["status"] == "ok" and r["trials"] == "32", (run, r)
                by_len[int(r["eval_len"])].append(float(r["accuracy"]))
        out[key] = {n: statistics.fmean(v) for n, v in by_len.items() if len(v) == 5}
    return out


def pk_mean(method: str, steps: int, length: int) -> float:
    values = [v[length] for (m, s, _), v in ext_passkey().items() if m == method and s == steps]
    assert len(values) == 3, (method, steps, length)
    return statistics.fmean(values)


def _pct(x: float) -> str:
    return f"{x:.0%}"


@claim("extend_passkey")
def extpk_runs():
    acc = ext_passkey()
    ext = {(m, s, seed) for m, s, seed in acc if s >= 0}
    ok = ext == {(m, s, seed) for m in PK_METHODS for s in (0, 200) for seed in (0, 1, 2)}
    lengths = all(set(v) == {64, 128, 256, 512, 1024} for (m, s, _), v in acc.items() if s >= 0)
    return ("30 extension runs: 5 methods × {0, 200} steps × seeds 0, 1 and 2, each scored on 32 keys at 5 depths "
            "at 64, 128, 256, 512 and 1024 tokens."), ok and lengths


@claim("extend_passkey")
def extpk_at_256():
    parts = ", ".join(f"{PK_NAMES[m]} {_pct(pk_mean(m, 200, 256))}" for m in PK_METHODS)
    acc = ext_passkey()
    order = [s for s in (0, 1, 2) if acc[("yarn", 200, s)][256] > acc[("linear", 200, s)][256]
             > acc[("direct", 200, s)][256]]
    text = (f"After 200 steps at 256 tokens (the fine-tuned length) the mean accuracy is {parts}; YaRN is above PI "
            f"and PI above direct fine-tuning in {len(order)} of 3 seeds.")
    return text, len(order) >= 2, (len(order), 3)


@claim("extend_passkey")
def extpk_pi_step0():
    worst = max(pk_mean("linear", 0, n) for n in (64, 128, 256, 512, 1024))
    return (f"Without training, PI's compressed positions retrieve at most {worst:.1%} of keys at any length — "
            "even at the base model's own 64 tokens, where the base retrieves every key."), \
        worst < 0.1 and all(v[64] == 1.0 for (m, s, _), v in ext_passkey().items() if m == "base:rope")


@claim("extend_passkey")
def extpk_nothing_beyond():
    rope = ("direct", "linear", "yarn")
    best = max(pk_mean(m, 200, n) for m in rope for n in (512, 1024))
    return (f"No RoPE method retrieves past the fine-tuned length: after 200 steps every one is at most "
            f"{best:.1%} at 512 and 1024 tokens."), best < 0.1


@claim("extend_passkey")
def extpk_short_loss():
    rope = ("direct", "linear", "yarn")
    parts = ", ".join(f"{PK_NAMES[m]} {_pct(pk_mean(m, 200, 64))}" for m in rope)
    ok = all(pk_mean(m, 200, 64) < 0.5 for m in rope) and all(
        v[64] == 1.0 for (m, s, _), v in ext_passkey().items() if m == "base:rope")
    return (f"Fine-tuning at 256 tokens costs the RoPE models their retrieval at 64 tokens: after 200 steps "
            f"{parts}, against 100% for the base models."), ok


@claim("hf", measurement=True)
def hf_memory():
    import json

    rows = {(r["length"], r["way"]): r["extra_mib"] for r in
            json.loads((RESULTS / "hf" / "memory.json").read_text())["rows"]}
    ours, theirs = rows[(16384, "ropebench")], rows[(16384, "transformers")]
    text = (f"Scoring one 16,384-token window of a random 8-layer, 512-wide, 32,000-id Llama through the HF path "
            f"takes {ours:,.0f} MiB above the loaded model, against {theirs:,.0f} MiB for transformers' own "
            "`labels=` loss (`memory.json`, `python scripts/hf_memory.py`).")
    return text, ours < theirs / 4
