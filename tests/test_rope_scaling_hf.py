"""The scaling registry against Hugging Face transformers' own ``ROPE_INIT_FUNCTIONS`` (the test oracle), and the
per-length resolution that evaluation and passkey share (dynamic NTK must not be stretched twice).

transformers reads ``config.rope_parameters`` (``rope_theta``, ``partial_rotary_factor`` and the type's keys),
``config.head_dim`` and, for ``dynamic``, ``config.max_position_embeddings`` as the original length.
"""

import inspect
import math

import pytest
import torch

from ropebench.core.rope.freqs import (
    ROPE_INIT_FUNCTIONS,
    ROPE_VALIDATORS,
    SCALING_NAMES,
    rope_inv_freq,
    scaling_for_length,
    scaling_from_options,
    scaling_label,
)
from ropebench.errors import UserError

BASE, L = 10000.0, 512
CASES = [(16, 1.0, 2.0), (64, 1.0, 4.0), (128, 1.0, 16.0), (64, 0.5, 4.0), (128, 0.25, 2.0)]
CASE_IDS = [f"d{d}-rotary{p}-s{s:g}" for d, p, s in CASES]


def hf(rope_parameters: dict, head_dim: int, partial: float, max_positions: int, seq_len=None):
    """(inv_freq, attention_factor) from transformers' registry for a Llama config with these parameters."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS as HF_FUNCTIONS

    params = {**rope_parameters, "rope_theta": BASE, "partial_rotary_factor": partial}
    config = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                                      max_position_embeddings=max_positions, rope_parameters=params)
    return HF_FUNCTIONS[params["rope_type"]](config, "cpu", seq_len=seq_len)


def assert_same(ours, theirs):
    (inv_freq, attention), (hf_inv_freq, hf_attention) = ours, theirs
    assert inv_freq.dtype == torch.float32 and inv_freq.shape == hf_inv_freq.shape
    # Both float32; HF raises base to float32 powers, ropebench in float64: a few ulp apart.
    torch.testing.assert_close(inv_freq, hf_inv_freq.float(), rtol=5e-6, atol=0.0)
    assert attention == pytest.approx(hf_attention, rel=1e-12)


def ours(head_dim, partial, spec, seq_len=None):
    return rope_inv_freq(int(head_dim * partial), BASE, spec, seq_len=seq_len)


@pytest.mark.parametrize("head_dim,partial,s", CASES, ids=CASE_IDS)
def test_linear_matches_hf(head_dim, partial, s):
    spec = {"rope_type": "linear", "factor": s}
    assert_same(ours(head_dim, partial, spec), hf(spec, head_dim, partial, int(s * L)))


@pytest.mark.parametrize("head_dim,partial,s", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seq_len", [L // 2, L, 3 * L, 16 * L + 5])
def test_dynamic_matches_hf(head_dim, partial, s, seq_len):
    spec = {"rope_type": "dynamic", "factor": s}
    mine = ours(head_dim, partial, {**spec, "original_max_position_embeddings": L}, seq_len)
    assert_same(mine, hf(spec, head_dim, partial, L, seq_len=seq_len))


@pytest.mark.parametrize("head_dim,partial,s", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("extra", [{}, {"beta_fast": 16.0, "beta_slow": 2.0}, {"mscale": 1.0, "mscale_all_dim": 0.5},
                                   {"mscale": 0.707, "mscale_all_dim": 0.707}, {"attention_factor": 1.3},
                                   {"truncate": False}], ids=["defaults", "betas", "mscale", "mscale-equal",
                                                              "attention-factor", "no-truncate"])
def test_yarn_matches_hf(head_dim, partial, s, extra):
    spec = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L, **extra}
    assert_same(ours(head_dim, partial, spec), hf(spec, head_dim, partial, int(s * L)))


def test_yarn_mscale_worked_value():
    # mscale(s, m) = 0.1 m ln s + 1: s = 4, mscale 1, mscale_all_dim 0.5 -> 1.13863 / 1.06931 = 1.0648.
    spec = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": L, "mscale": 1.0,
            "mscale_all_dim": 0.5}
    _, attention = rope_inv_freq(64, BASE, spec)
    assert attention == pytest.approx((0.1 * math.log(4) + 1) / (0.05 * math.log(4) + 1), rel=1e-12)
    assert attention == pytest.approx(1.0648, abs=1e-4)
    _, explicit = rope_inv_freq(64, BASE, {**spec, "attention_factor": 1.5})
    assert explicit == 1.5  # an explicit attention_factor wins over mscale


@pytest.mark.parametrize("head_dim,partial,s", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("low,high", [(1.0, 4.0), (2.0, 8.0), (0.5, 32.0)])
def test_llama3_matches_hf(head_dim, partial, s, low, high):
    spec = {"rope_type": "llama3", "factor": s, "original_max_position_embeddings": L, "low_freq_factor": low,
            "high_freq_factor": high}
    assert_same(ours(head_dim, partial, spec), hf(spec, head_dim, partial, int(s * L)))


def test_llama3_defaults_are_llama_31s_and_follow_the_wavelength_rule():
    spec = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}
    inv_freq, attention = rope_inv_freq(128, 500000.0, spec)
    theta = 500000.0 ** (-torch.arange(0, 128, 2, dtype=torch.float64) / 128)
    wavelength = 2 * math.pi / theta
    slow, fast = wavelength > 8192 / 1.0, wavelength < 8192 / 4.0  # low_freq_factor 1, high_freq_factor 4
    assert slow.any() and fast.any() and (~slow & ~fast).any()
    torch.testing.assert_close(inv_freq[slow].double(), theta[slow] / 8, rtol=2e-6, atol=0.0)
    torch.testing.assert_close(inv_freq[fast].double(), theta[fast], rtol=2e-6, atol=0.0)
    mid = ~slow & ~fast
    a = (8192 / wavelength[mid] - 1.0) / (4.0 - 1.0)
    torch.testing.assert_close(inv_freq[mid].double(), (1 - a) * theta[mid] / 8 + a * theta[mid], rtol=2e-6, atol=0.0)
    assert attention == 1.0


def longrope_lists(pairs: int):
    short = [1.0 + 0.05 * i for i in range(pairs)]
    long = [1.0 + 0.5 * i for i in range(pairs)]
    return {"short_factor": short, "long_factor": long}


@pytest.mark.parametrize("head_dim,partial,s", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seq_len", [None, L, L + 1, 8 * L])
@pytest.mark.parametrize("attention", [None, 1.2])
def test_longrope_matches_hf(head_dim, partial, s, seq_len, attention):
    spec = {"rope_type": "longrope", "factor": s, "original_max_position_embeddings": L,
            **longrope_lists(int(head_dim * partial) // 2)}
    if attention is not None:
        spec["attention_factor"] = attention
    assert_same(ours(head_dim, partial, spec, seq_len), hf(spec, head_dim, partial, int(s * L), seq_len=seq_len))


def test_longrope_uses_the_long_list_only_past_the_original_length():
    spec = {"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": L, **longrope_lists(8)}
    theta, _ = rope_inv_freq(16, BASE)
    short, attention = rope_inv_freq(16, BASE, spec, seq_len=L)
    long, _ = rope_inv_freq(16, BASE, spec, seq_len=L + 1)
    torch.testing.assert_close(short, theta / torch.tensor(spec["short_factor"]), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(long, theta / torch.tensor(spec["long_factor"]), rtol=1e-6, atol=0.0)
    assert attention == pytest.approx(math.sqrt(1 + math.log(4) / math.log(L)))


# ---- the registry ----

def test_registry_is_one_dict_of_functions_with_one_signature_and_a_validator_each():
    assert set(ROPE_INIT_FUNCTIONS) == set(ROPE_VALIDATORS) == {
        "default", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope"}
    signatures = {tuple(inspect.signature(fn).parameters) for fn in ROPE_INIT_FUNCTIONS.values()}
    assert signatures == {("dim", "base", "spec", "seq_len")}
    assert SCALING_NAMES == ("none", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope")


def test_unknown_type_lists_every_registered_name():
    with pytest.raises(UserError) as info:
        rope_inv_freq(64, BASE, {"rope_type": "proportional", "factor": 2.0})
    message = str(info.value)
    assert "unknown rope scaling 'proportional'" in message and "\n" not in message
    for name in SCALING_NAMES:
        assert name in message


@pytest.mark.parametrize("spec, message", [
    ({"rope_type": "yarn", "factor": 2.0, "mscale": 1.0}, "give both or neither"),
    ({"rope_type": "yarn", "factor": 2.0, "mscale": 0.0, "mscale_all_dim": 1.0}, "mscale must be positive"),
    ({"rope_type": "yarn", "factor": 2.0, "truncate": "yes"}, "truncate must be true or false"),
    ({"rope_type": "linear", "factor": 2.0, "beta_fast": 16.0}, "'linear' does not use beta_fast"),
    ({"rope_type": "ntk", "factor": 2.0, "attention_factor": 1.1}, "'ntk' does not use attention_factor"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0},
     "high_freq_factor > low_freq_factor"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": float("nan")}, "finite number"),
    ({"rope_type": "longrope", "factor": 2.0, "long_factor": [1.0] * 32}, "longrope needs rope_scaling.short_factor"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": "1,x"}, "list of numbers"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 32, "long_factor": [1.0] * 31 + [0.0]}, "positive numbers"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 31, "long_factor": [1.0] * 32,
      "original_max_position_embeddings": L}, "short_factor needs 32 numbers"),
    ({"rope_type": "llama3", "factor": 8.0}, "needs original_max_position_embeddings"),
])
def test_bad_type_parameters_are_one_line_user_errors(spec, message):
    with pytest.raises(UserError, match=message) as info:
        rope_inv_freq(64, BASE, spec, seq_len=2 * L)
    assert "\n" not in str(info.value)


# ---- one resolution per evaluated length (eval-length and passkey) ----

@pytest.mark.parametrize("eval_len", [L // 2, L, L + L // 4, 2 * L, 4 * L, 16 * L])
@pytest.mark.parametrize("head_dim", [16, 64])
def test_dynamic_without_factor_is_ntk_with_the_automatic_factor(eval_len, head_dim):
    dynamic, dyn_fields = scaling_for_length({"rope_type": "dynamic"}, eval_len, L)
    ntk, ntk_fields = scaling_for_length({"rope_type": "ntk"}, eval_len, L)
    s = max(1.0, eval_len / L)
    assert ntk["factor"] == s and dynamic["factor"] == 1.0  # dynamic never gets the automatic factor
    a = rope_inv_freq(head_dim, BASE, dynamic, seq_len=eval_len)
    b = rope_inv_freq(head_dim, BASE, ntk, seq_len=eval_len)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] == 1.0  # bit for bit, not s^2 - s + 1
    assert dyn_fields == {"rope_scaling": "dynamic", "rope_factor": "1", "rope_scale": f"{s:g}"}
    assert ntk_fields == {"rope_scaling": "ntk", "rope_factor": f"{s:g}", "rope_scale": f"{s:g}"}


@pytest.mark.parametrize("factor", [None, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("eval_len", [L // 2, 2 * L, 16 * L])
def test_dynamic_at_the_eval_length_matches_hf(factor, eval_len):
    spec, fields = scaling_for_length({"rope_type": "dynamic", "factor": factor}, eval_len, L)
    mine = rope_inv_freq(64, BASE, spec, seq_len=eval_len)
    assert_same(mine, hf({"rope_type": "dynamic", "factor": factor or 1.0}, 64, 1.0, L, seq_len=eval_len))
    f = factor or 1.0
    assert fields["rope_factor"] == f"{f:g}"
    assert float(fields["rope_scale"]) == pytest.approx(max(1.0, f * eval_len / L - (f - 1)), rel=1e-5)


def test_fields_record_what_was_applied():
    assert scaling_for_length(None, 4 * L, L) == (None, {"rope_scaling": "none", "rope_factor": "", "rope_scale": ""})
    assert scaling_for_length({"rope_type": "none"}, 4 * L, L)[0] is None
    spec, fields = scaling_for_length({"rope_type": "yarn", "mscale": 1.0, "mscale_all_dim": 0.5}, 4 * L, L)
    assert spec["factor"] == 4.0 and spec["original_max_position_embeddings"] == L
    assert fields == {"rope_scaling": "yarn(mscale=1,mscale_all_dim=0.5)", "rope_factor": "4", "rope_scale": "4"}
    spec, fields = scaling_for_length({"rope_type": "linear", "factor": 3.0}, 4 * L, L)
    assert spec["factor"] == 3.0 and fields["rope_factor"] == fields["rope_scale"] == "3"
    assert fields["rope_scaling"] == "linear(factor=3)"
    # A short length never compresses: the automatic factor is at least 1.
    assert scaling_for_length({"rope_type": "llama3"}, L // 2, L)[0]["factor"] == 1.0


def test_labels_tell_settings_apart():
    a = scaling_label({"rope_type": "longrope", **longrope_lists(8)})
    b = scaling_label({"rope_type": "longrope", **longrope_lists(8), "long_factor": [2.0] * 8})
    assert a.startswith("longrope(short_factor=#") and a != b
    assert scaling_label({"rope_type": "yarn", "truncate": False, "beta_fast": None}) == "yarn(truncate=False)"


def test_options_build_the_same_spec_for_every_command():
    assert scaling_from_options("none") is None and scaling_from_options("default", factor=None) is None
    spec = scaling_from_options("longrope", factor=None, short_factor="1,1.5", long_factor="2, 3")
    assert spec == {"rope_type": "longrope", "short_factor": "1,1.5", "long_factor": "2, 3"}  # factor: per length
    assert rope_inv_freq(4, BASE, {**spec, "original_max_position_embeddings": L}, seq_len=2 * L)[0].tolist() == [
        pytest.approx(0.5), pytest.approx(0.01 / 3)]
    with pytest.raises(UserError, match=r"^--factor needs --rope-scaling \(one of: linear, ntk, dynamic"):
        scaling_from_options("none", factor=2.0)
    with pytest.raises(UserError, match="--mscale, --beta-fast need --rope-scaling"):
        scaling_from_options("none", mscale=1.0, beta_fast=8.0)
    with pytest.raises(UserError, match="unknown rope scaling 'ntk-by-parts'"):
        scaling_from_options("ntk-by-parts")
