"""rope_inv_freq against the context-extension formulas, recomputed here in float64: position interpolation
(Chen et al. 2023), NTK-aware and dynamic NTK base changes, YaRN (Peng et al. 2023). Hugging Face's own
implementations are the oracle in test_rope_scaling_hf.py.

The expected values are written from the published formulas, not from freqs.py, so a slip in either shows.
"""

import math

import pytest
import torch

from ropebench.core.rope.freqs import rope_inv_freq, rope_tables
from ropebench.errors import UserError

D, BASE, L = 64, 10000.0, 512


def theta(d=D, base=BASE):
    """theta_i = base^(-2i/d), float64."""
    return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def close(actual, expected):
    # float32 output against float64 formulas: a few ulp of relative error.
    torch.testing.assert_close(actual.double(), expected, rtol=2e-6, atol=0.0)


def test_default_and_none_are_unscaled():
    for spec in (None, {}, {"rope_type": "default"}, {"rope_type": "none"}):
        inv_freq, factor = rope_inv_freq(D, BASE, spec)
        assert inv_freq.dtype == torch.float32 and factor == 1.0
        close(inv_freq, theta())


@pytest.mark.parametrize("s", [1.0, 2.0, 4.0, 16.0])
def test_linear_is_position_interpolation(s):
    inv_freq, factor = rope_inv_freq(D, BASE, {"rope_type": "linear", "factor": s})
    close(inv_freq, theta() / s)
    assert factor == 1.0


@pytest.mark.parametrize("s", [2.0, 8.0])
def test_ntk_aware_base(s):
    inv_freq, _ = rope_inv_freq(D, BASE, {"rope_type": "ntk", "factor": s})
    close(inv_freq, theta(D, BASE * s ** (D / (D - 2))))
    # The highest frequency (pair 0) is never changed by a base change; the lowest is divided by exactly s.
    assert inv_freq[0].item() == 1.0
    assert inv_freq[-1].item() == pytest.approx(theta()[-1].item() / s, rel=1e-5)


@pytest.mark.parametrize("factor", [1.0, 2.0, 4.0])
def test_dynamic_is_unchanged_up_to_the_training_length(factor):
    spec = {"rope_type": "dynamic", "factor": factor, "original_max_position_embeddings": L}
    for seq_len in (1, L // 2, L):
        inv_freq, attention_factor = rope_inv_freq(D, BASE, spec, seq_len=seq_len)
        close(inv_freq, theta())
        assert attention_factor == 1.0


@pytest.mark.parametrize("factor", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("seq_len", [L + 1, 2 * L, 7 * L])
def test_dynamic_beyond_the_training_length(factor, seq_len):
    spec = {"rope_type": "dynamic", "factor": factor, "original_max_position_embeddings": L}
    inv_freq, _ = rope_inv_freq(D, BASE, spec, seq_len=seq_len)
    base = BASE * ((factor * seq_len / L) - (factor - 1)) ** (D / (D - 2))
    close(inv_freq, theta(D, base))


@pytest.mark.parametrize("seq_len", [2 * L, 3 * L])
def test_dynamic_with_factor_one_is_ntk_at_the_current_ratio(seq_len):
    spec = {"rope_type": "dynamic", "factor": 1.0, "original_max_position_embeddings": L}
    dynamic, _ = rope_inv_freq(D, BASE, spec, seq_len=seq_len)
    ntk, _ = rope_inv_freq(D, BASE, {"rope_type": "ntk", "factor": seq_len / L})
    torch.testing.assert_close(dynamic, ntk, rtol=1e-6, atol=0.0)


def yarn_expected(d, base, orig_len, s, beta_fast=32.0, beta_slow=1.0):
    """YaRN per pair: theta' = theta/s * (1 - gamma) + theta * gamma, gamma ramping 1 -> 0 between the pairs
    that turn beta_fast and beta_slow times within orig_len (floor at the fast end, ceil at the slow end)."""

    def pair(rotations):
        return d * math.log(orig_len / (2 * math.pi * rotations)) / (2 * math.log(base))

    low = max(math.floor(pair(beta_fast)), 0)
    high = min(math.ceil(pair(beta_slow)), d - 1)
    i = torch.arange(d // 2, dtype=torch.float64)
    gamma = 1.0 - ((i - low) / (high - low)).clamp(0.0, 1.0)
    t = theta(d, base)
    return t / s * (1 - gamma) + t * gamma, (low, high)


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0])
def test_yarn_worked_values(s):
    spec = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L}
    inv_freq, attention_factor = rope_inv_freq(D, BASE, spec)
    expected, (low, high) = yarn_expected(D, BASE, L, s)
    assert (low, high) == (3, 16)  # the worked example: d=64, L=512, base 10000
    close(inv_freq, expected)
    unscaled, _ = rope_inv_freq(D, BASE)
    # Pairs 0-3 turn more than 32 times within L: untouched, bit for bit.
    assert torch.equal(inv_freq[:4], unscaled[:4])
    # Pairs from 16 on turn less than once within L: fully interpolated, bit for bit.
    assert torch.equal(inv_freq[16:], unscaled[16:] / s)
    # Pairs inside the ramp lie strictly between the two.
    ramp = slice(4, 16)
    assert torch.all(inv_freq[ramp] < unscaled[ramp]) and torch.all(inv_freq[ramp] > unscaled[ramp] / s)
    assert attention_factor == pytest.approx(0.1 * math.log(s) + 1.0, rel=1e-12)


def test_yarn_explicit_attention_factor_wins():
    spec = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": L,
            "attention_factor": 1.5}
    _, attention_factor = rope_inv_freq(D, BASE, spec)
    assert attention_factor == 1.5


def test_yarn_factor_one_changes_nothing():
    spec = {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": L}
    inv_freq, attention_factor = rope_inv_freq(D, BASE, spec)
    close(inv_freq, theta())
    assert attention_factor == 1.0


def test_yarn_custom_betas():
    spec = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
            "beta_fast": 16.0, "beta_slow": 2.0}
    inv_freq, _ = rope_inv_freq(128, 500000.0, spec)
    expected, _ = yarn_expected(128, 500000.0, 2048, 4.0, beta_fast=16.0, beta_slow=2.0)
    close(inv_freq, expected)


def test_attention_factor_scales_both_tables():
    inv_freq, _ = rope_inv_freq(8, BASE)
    pos = torch.arange(5)
    cos1, sin1 = rope_tables(inv_freq, pos, 1.0)
    cos2, sin2 = rope_tables(inv_freq, pos, 1.25)
    torch.testing.assert_close(cos2, cos1 * 1.25)
    torch.testing.assert_close(sin2, sin1 * 1.25)


def test_tables_are_float32_under_bf16_autocast():
    inv_freq, _ = rope_inv_freq(D, BASE)
    pos = torch.arange(20000)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cos, sin = rope_tables(inv_freq, pos)
    assert cos.dtype == sin.dtype == torch.float32
    # Position 15962 is not a bf16 number; an fp32 table holds its angle for the fastest pair (theta_0 = 1).
    expected = torch.tensor(15962.0, dtype=torch.float64)
    assert cos[15962, 0].item() == pytest.approx(torch.cos(expected).item(), abs=1e-3)
    assert sin[15962, 0].item() == pytest.approx(torch.sin(expected).item(), abs=1e-3)


@pytest.mark.parametrize(
    "dim, base, spec",
    [
        (D, BASE, {"rope_type": "wibble", "factor": 2.0}),
        (D, BASE, {"rope_type": "linear", "factor": 0.5}),
        (D, BASE, {"rope_type": "ntk", "factor": 0.0}),
        (D, BASE, {"rope_type": "linear", "factor": "two"}),
        (D, BASE, {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": L,
                   "beta_fast": 1.0, "beta_slow": 1.0}),
        (D, BASE, {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": L,
                   "beta_fast": 1.0, "beta_slow": 32.0}),
        (D, BASE, {"rope_type": "yarn", "factor": 2.0}),
        (D, BASE, {"rope_type": "dynamic", "factor": 2.0}),
        (D, BASE, {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": L,
                   "attention_factor": -1.0}),
        (D, 0.0, None),
        (D, -10000.0, {"rope_type": "linear", "factor": 2.0}),
        (63, BASE, None),
        (63, BASE, {"rope_type": "ntk", "factor": 2.0}),
        (0, BASE, None),
    ],
    ids=["unknown-type", "factor<1", "factor=0", "factor-not-a-number", "beta_fast=beta_slow",
         "beta_fast<beta_slow", "yarn-no-orig-len", "dynamic-no-orig-len", "negative-attention-factor",
         "base=0", "negative-base", "odd-dim", "odd-dim-ntk", "zero-dim"],
)
def test_bad_inputs_raise_user_error(dim, base, spec):
    with pytest.raises(UserError):
        rope_inv_freq(dim, base, spec, seq_len=4 * L)


# Edge inputs that must become a UserError (the one-line message the CLI prints), never a Python error.
@pytest.mark.parametrize("rope_type", ["ntk", "dynamic"])
def test_rotary_dim_two_with_base_scaling(rope_type):
    # One pair: theta_0 = 1 whatever the base, so a base change is a no-op. Unscaled output or a UserError.
    spec = {"rope_type": rope_type, "factor": 2.0, "original_max_position_embeddings": 8}
    try:
        inv_freq, _ = rope_inv_freq(2, BASE, spec, seq_len=64)
    except UserError:
        return
    assert inv_freq.tolist() == [1.0]


@pytest.mark.parametrize("rope_type", ["yarn", "dynamic"])
@pytest.mark.parametrize("orig_len", [-512, 0.5, "abc"])
def test_bad_original_length_is_a_user_error(rope_type, orig_len):
    spec = {"rope_type": rope_type, "factor": 2.0, "original_max_position_embeddings": orig_len}
    with pytest.raises(UserError):
        rope_inv_freq(D, BASE, spec, seq_len=4 * L)


def test_infinite_factor_is_a_user_error():
    with pytest.raises(UserError):
        rope_inv_freq(D, BASE, {"rope_type": "linear", "factor": float("inf")})


def test_yarn_base_one_is_a_user_error():
    with pytest.raises(UserError):
        rope_inv_freq(D, 1.0, {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": L})
