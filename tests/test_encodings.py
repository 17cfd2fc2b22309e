"""The core six encodings against independent references: formulas, golden tables and invariants."""

import math

import pytest
import torch
from helpers import tiny_model

from ropebench.core.pe import registry
from ropebench.core.pe.alibi import alibi_slopes
from ropebench.core.pe.sinusoidal import sinusoidal_table
from ropebench.core.pe.t5 import t5_bucket
from ropebench.core.rope.freqs import default_inv_freq, rope_tables
from ropebench.core.rope.reference import apply_rope, rotate
from ropebench.errors import UserError

ALL = sorted(registry())


def test_sinusoidal_table_matches_vaswani_formula():
    d = 8
    table = sinusoidal_table(torch.arange(50), d).double()
    for p in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_alibi_slopes_8_heads_are_powers_of_one_half():
    assert alibi_slopes(8).tolist() == pytest.approx([2.0 ** -(i + 1) for i in range(8)])


def test_alibi_slopes_12_heads_interleave_the_16_head_slopes():
    # 8 slopes of the 8-head set, then every other slope of the 16-head set (2^-0.5, 2^-1.5, ...), first 4.
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 + i) for i in range(4)]
    assert alibi_slopes(12).tolist() == pytest.approx(expected)


def test_alibi_bias_is_slope_times_signed_distance():
    model = tiny_model("alibi", n_head=4)
    bias = model.pe.bias(5, torch.device("cpu"))
    slopes = alibi_slopes(4)
    for h in range(4):
        for i in range(5):
            for j in range(i + 1):
                assert bias[h, i, j].item() == pytest.approx(-slopes[h].item() * (i - j))


@pytest.mark.parametrize("distance,bucket", [(0, 0), (1, 1), (15, 15), (16, 16), (20, 17), (32, 21), (64, 26),
                                             (127, 31), (128, 31), (5000, 31)])
def test_t5_causal_buckets(distance, bucket):
    # max_exact = 16; beyond it 16 + floor(log(n/16) / log(128/16) * 16), capped at 31.
    assert t5_bucket(torch.tensor([distance])).item() == bucket


def test_t5_bias_is_shared_table_lookup_by_distance():
    model = tiny_model("t5", n_head=2)
    with torch.no_grad():
        model.pe.relative_bias.weight.copy_(torch.arange(64, dtype=torch.float32).view(32, 2))
    bias = model.pe.bias(40, torch.device("cpu"))
    assert model.pe.max_distance == 32  # training length 16 < num_buckets: the last bucket starts at 32
    assert bias[1, 39, 0].item() == 2 * 31 + 1  # distance 39 > max_distance -> last bucket (31), head 1
    bucket_20 = 16 + int(math.log(20 / 16) / math.log(32 / 16) * 16)  # = 21: log-spaced up to max_distance 32
    assert bias[1, 20, 0].item() == 2 * bucket_20 + 1
    assert bias[0, 10, 3].item() == 2 * 7  # distance 7 -> bucket 7 -> row 7, head 0


@pytest.mark.parametrize("pairing,partner", [("half", 4), ("interleaved", 1)])
def test_rope_pairs_the_documented_channels(pairing, partner):
    # A unit vector in channel 0 at position 1 rotates into exactly one partner channel, by sin(theta_0) = sin(1).
    d = 8
    x = torch.zeros(1, 1, 2, d)
    x[..., 1, 0] = 1.0
    cos, sin = rope_tables(default_inv_freq(d, 10000.0), torch.arange(2))
    out = rotate(x, cos, sin, pairing)[0, 0, 1]
    assert out[0].item() == pytest.approx(math.cos(1.0))
    assert out[partner].item() == pytest.approx(math.sin(1.0))
    others = [c for c in range(d) if c not in (0, partner)]
    assert out[others].abs().max().item() == 0.0


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_score_depends_only_on_relative_distance(pairing):
    d, T = 16, 40
    g = torch.Generator().manual_seed(0)
    q_vec, k_vec = torch.randn(d, generator=g), torch.randn(d, generator=g)
    q = q_vec.expand(1, 1, T, d).contiguous()
    k = k_vec.expand(1, 1, T, d).contiguous()
    cos, sin = rope_tables(default_inv_freq(d, 10000.0), torch.arange(T))
    q_rot, k_rot = apply_rope(q, k, cos, sin, pairing)
    scores = (q_rot[0, 0] @ k_rot[0, 0].T).double()
    for offset in (0, 3, 17):
        diagonal = torch.diagonal(scores, offset=-offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4)


def test_rope_partial_rotary_leaves_tail_channels_alone():
    model = tiny_model("rope", n_head=2, n_embd=32, rotary_dim=8)
    q, k = torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    q_rot, k_rot = model.pe.qk(q, k, torch.arange(5))
    assert torch.equal(q_rot[..., 8:], q[..., 8:]) and torch.equal(k_rot[..., 8:], k[..., 8:])
    assert not torch.allclose(q_rot[..., 1:, :8], q[..., 1:, :8])


def test_rope_tables_are_fp32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cos, sin = rope_tables(default_inv_freq(64, 10000.0), torch.arange(20000))
    assert cos.dtype == sin.dtype == torch.float32
    # bf16 positions would round 15962 to 15936 or 15968; fp32 keeps the exact angle.
    assert cos[15962, 0].item() == pytest.approx(math.cos(15962.0), abs=1e-3)


def test_rope_never_touches_values():
    model = tiny_model("rope")
    v = torch.randn(1, 4, 6, 8)
    assert model.pe.value(v, torch.arange(6)) is v


@pytest.mark.parametrize("name", ALL)
def test_causality_every_encoding(name):
    """Changing token t leaves every logit before t unchanged (and changes something at t)."""
    model = tiny_model(name, train_seq_len=24)
    with torch.no_grad():  # make learned tables non-zero so the test could fail if they leaked the future
        for p in model.pe.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 257, (2, 24), generator=g)
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 257
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-6)


def test_learned_positions_refuse_lengths_past_their_table():
    model = tiny_model("learned", train_seq_len=16)
    assert model.pe.max_len() == 16
    model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(UserError, match="max_len|can encode"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("overrides,message", [
    ({"pairing": "diagonal"}, "pairing"), ({"rotary_dim": 7}, "rotary_dim"), ({"rotary_dim": 64}, "rotary_dim"),
    ({"base": -1.0}, "base"), ({"backend": "cuda-magic"}, "backend"),
])
def test_rope_bad_settings_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        model = tiny_model("rope", **overrides)
        model(torch.zeros(1, 4, dtype=torch.long))


def test_n_head_must_divide_n_embd():
    with pytest.raises(UserError, match="n_head=3 must divide model.n_embd=32"):
        tiny_model("nope", n_head=3, n_embd=32)


@pytest.mark.parametrize("name", ["alibi", "t5"])
def test_flex_attention_matches_dense_bias(name):
    pytest.importorskip("torch.nn.attention.flex_attention")
    model = tiny_model(name)
    with torch.no_grad():
        for p in model.pe.parameters():
            p.add_(torch.randn_like(p))
    tokens = torch.randint(0, 257, (2, 16))
    with torch.no_grad():
        dense, _ = model(tokens)
        model.attention = "flex"
        flex, _ = model(tokens)
    assert torch.allclose(dense, flex, atol=1e-4)
