"""The claims of results/passkey/README.md and results/extend/README.md, recomputed from the committed CSVs."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict

from check_results import RESULTS, claim, in_readme  # noqa: F401

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
    return text, len(wins) == 3 and max(means.values()) < 0.8


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
