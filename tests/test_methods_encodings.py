"""p-RoPE, Resonance RoPE, the Forgetting Transformer and CoPE against their papers' formulas, written here
(tests/oracles.py and below, float64), and the edge cases that pin them: p = 1 is RoPE and p = 0 is NoPE, bitwise."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model
from oracles import manual_logits, rope_oracle

from ropebench.core.rope.freqs import rope_inv_freq
from ropebench.errors import UserError

TOL = dict(rtol=0, atol=1e-5)


def qk_of(model, T=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, D = model.cfg.n_head, model.cfg.n_embd // model.cfg.n_head
    q, k = torch.randn(2, H, T, D, generator=g), torch.randn(2, H, T, D, generator=g)
    return q, k, model.pe.qk(q, k, torch.arange(T))


# ------------------------------------------------------------------------------------------------ p-RoPE


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_p_rope_keeps_the_fastest_pairs_over_the_full_head(p, pairing):
    model = tiny_model("p_rope", p=p, pairing=pairing)  # head_dim 8: int(p * 8 / 2) pairs turn
    q, k, (q_rot, k_rot) = qk_of(model)
    kept = int(p * 8 / 2)
    torch.testing.assert_close(q_rot.double(), rope_oracle(q, kept=kept, pairing=pairing), **TOL)
    torch.testing.assert_close(k_rot.double(), rope_oracle(k, kept=kept, pairing=pairing), **TOL)


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [2, 4, 6])
def test_neox_partial_rotary_rotates_a_block_with_its_own_frequencies(rotary_dim, pairing):
    model = tiny_model("rope", rotary_dim=rotary_dim, pairing=pairing)
    q, _, (q_rot, _) = qk_of(model)
    torch.testing.assert_close(q_rot.double(), rope_oracle(q, rotary_dim=rotary_dim, pairing=pairing), **TOL)


def test_p_rope_and_partial_rotary_differ_at_the_same_share_of_pairs():
    """Half the pairs turn in both; which channels pair and at what frequency does not agree, and the
    score difference is not a constant offset: it changes with the distance."""
    q, k, p_rope = qk_of(tiny_model("p_rope", p=0.5))
    *_, partial = qk_of(tiny_model("rope", rotary_dim=4))
    assert (p_rope[0] - partial[0]).abs().max() > 0.5
    scores = [(q_rot @ k_rot.transpose(-1, -2))[0, 0] for q_rot, k_rot in (p_rope, partial)]
    by_distance = [torch.diagonal(scores[0] - scores[1], -d).abs().mean().item() for d in (1, 8, 30)]
    assert max(by_distance) - min(by_distance) > 0.1


def test_p_rope_one_is_rope_and_zero_is_nope_bitwise():
    tokens = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p, other in ((1.0, "rope"), (0.0, "nope")):
            assert torch.equal(tiny_model("p_rope", p=p)(tokens)[0], tiny_model(other)(tokens)[0]), p


@pytest.mark.parametrize("overrides,message", [({"p": 1.5}, "pe.p must be in [0, 1]"),
                                               ({"p": -0.1}, "pe.p must be in [0, 1]"),
                                               ({"rotary_dim": 4}, "takes no pe.rotary_dim")])
def test_p_rope_bad_settings(overrides, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny_model("p_rope", **overrides)


# --------------------------------------------------------------------------------------------- Resonance


def _round_wavelengths(theta):
    return 2 * math.pi / torch.round(2 * math.pi / theta)


SPECS = [None, {"rope_type": "linear", "factor": 4.0}, {"rope_type": "ntk", "factor": 4.0},
         {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 64},
         {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
         {"rope_type": "llama3", "factor": 4.0, "original_max_position_embeddings": 64},
         {"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 64,
          "short_factor": [1.0] * 16, "long_factor": [1.0 + i / 4 for i in range(16)]}]


def test_resonance_rounds_the_plain_and_linear_wavelengths():
    theta = 10000.0 ** (-torch.arange(0, 32, 2, dtype=torch.float64) / 32)
    for spec, expected in ((None, theta), ({"rope_type": "linear", "factor": 3.0}, theta / 3)):
        got, _ = rope_inv_freq(32, 10000.0, spec, resonance=True)
        torch.testing.assert_close(got.double(), _round_wavelengths(expected), rtol=1e-6, atol=0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["rope_type"] if s else "none")
def test_resonance_composes_with_every_scaling_type(spec):
    plain, factor = rope_inv_freq(32, 10000.0, spec, seq_len=256)
    resonant, resonant_factor = rope_inv_freq(32, 10000.0, spec, seq_len=256, resonance=True)
    assert resonant_factor == factor
    torch.testing.assert_close(resonant.double(), _round_wavelengths(plain.double()), rtol=1e-6, atol=0)
    wavelengths = 2 * math.pi / resonant.double()
    assert ((wavelengths - wavelengths.round()).abs() / wavelengths).max() < 1e-6  # integers, up to fp32
    assert ((wavelengths - 2 * math.pi / plain.double()).abs() <= 0.5 + 1e-6 * wavelengths).all()  # nearest


def test_resonance_reaches_the_model_and_keeps_p_ropes_zero_frequencies():
    model = tiny_model("rope", resonance=True)
    cos, sin = model.pe.tables(50, torch.device("cpu"))
    theta = _round_wavelengths(10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    angle = torch.arange(50, dtype=torch.float64)[:, None] * theta
    torch.testing.assert_close(cos.double(), angle.cos(), **TOL)
    torch.testing.assert_close(sin.double(), angle.sin(), **TOL)
    inv_freq, _ = tiny_model("p_rope", p=0.5, resonance=True).pe.inv_freq(50)
    assert inv_freq[2:].tolist() == [0.0, 0.0] and inv_freq[1] > 0


# ------------------------------------------------------------------------------------ Forgetting Transformer


def fox_oracle(pe, h, layer):
    """logit_ij = sum_{t=j+1..i} log sigmoid(w_h . x_t + b_h) with layer's rows of the gate, by loops."""
    H, (B, T, _) = pe.n_head, h.shape
    w = pe.gate.weight.double()[layer * H:(layer + 1) * H]
    b = pe.gate.bias.double()[layer * H:(layer + 1) * H]
    log_f = F.logsigmoid(h.double() @ w.T + b)  # (B, T, H)
    out = torch.zeros(B, H, T, T, dtype=torch.float64)
    for i in range(T):
        for j in range(i + 1):
            out[:, :, i, j] = log_f[:, j + 1:i + 1].sum(dim=1)
    return out


def randomised(model, scale=0.5):
    with torch.no_grad():
        for p in model.pe.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def test_fox_logit_term_is_the_sum_of_log_forget_gates():
    model = randomised(tiny_model("fox", n_layer=3))
    h = torch.randn(2, 12, 32)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    for layer in range(3):
        got = model.pe.logit_term(h, None, None, torch.arange(12), layer)
        torch.testing.assert_close(got.double()[..., causal], fox_oracle(model.pe, h, layer)[..., causal], **TOL)
    assert model.pe.gate.bias.shape == (3 * 4,)  # gates per layer and head


def test_fox_model_equals_hand_written_attention():
    model = randomised(tiny_model("fox", n_layer=2))
    tokens = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(tokens)[0]
    expected = manual_logits(model, tokens, extra=lambda i, h, q, k: fox_oracle(model.pe, h, i))
    torch.testing.assert_close(ours.double(), expected, **TOL)


def test_fox_starts_as_the_authors_code_and_takes_x_transformers_bias():
    assert tiny_model("fox").pe.gate.bias.abs().max() == 0.0
    assert tiny_model("fox", bias_init=5.0).pe.gate.bias.unique().tolist() == [5.0]


# ---------------------------------------------------------------------------------------------------- CoPE


def cope_oracle(pe, q, k, layer):
    """g_it = sigmoid(q_i . k_t / sqrt(D)); p_ij = sum_{t=j..i} g_it, clamped to npos_max - 1; the term is
    q_i . e[p_ij], e interpolated linearly between integer rows. Loops, float64."""
    q, k, e = q.double(), k.double(), pe.pos_emb.double()[layer]  # e: (D, npos_max)
    B, H, T, D = q.shape
    out = torch.zeros(B, H, T, T, dtype=torch.float64)
    for i in range(T):
        gates = torch.sigmoid((q[:, :, i, None, :] * k).sum(-1) / math.sqrt(D))  # (B, H, keys)
        for j in range(i + 1):
            p = gates[:, :, j:i + 1].sum(-1).clamp(max=pe.npos_max - 1)
            low, high = p.floor(), p.ceil()
            at_low = (q[:, :, i] * e[:, low.long()].permute(1, 2, 0)).sum(-1)  # q_i . e[floor p]
            at_high = (q[:, :, i] * e[:, high.long()].permute(1, 2, 0)).sum(-1)
            out[:, :, i, j] = at_low * (1 - (p - low)) + at_high * (p - low)
    return out


def test_cope_logit_term_counts_gated_keys_and_interpolates():
    model = randomised(tiny_model("cope", n_layer=2, npos_max=6), scale=1.0)  # small table: clamping happens
    q, k = torch.randn(2, 4, 10, 8) * 2, torch.randn(2, 4, 10, 8) * 2
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    for layer in range(2):
        got = model.pe.logit_term(None, q, k, torch.arange(10), layer)
        torch.testing.assert_close(got.double()[..., causal], cope_oracle(model.pe, q, k, layer)[..., causal], **TOL)
    positions = model.pe.positions(q, k)
    assert (positions[..., 9, :9] >= positions[..., 9, 1:10]).all()  # counts grow into the past


def test_cope_model_equals_hand_written_attention():
    model = randomised(tiny_model("cope", n_layer=2), scale=1.0)
    tokens = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(tokens)[0]
    expected = manual_logits(model, tokens, extra=lambda i, h, q, k: cope_oracle(model.pe, q, k, i))
    torch.testing.assert_close(ours.double(), expected, **TOL)


@pytest.mark.parametrize("name,overrides", [("cope", {"npos_max": 1}), ("cope", {"npos_max": -2}),
                                            ("fox", {"bias_init": math.inf})])
def test_bad_settings_of_the_data_dependent_encodings(name, overrides):
    with pytest.raises(UserError):
        tiny_model(name, **overrides)
