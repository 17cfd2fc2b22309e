"""xPos, KERPLE and FIRE: golden values from the published formulas (float64, computed here), causality inside
the full GPT, bias() against score_mod(), a few training steps, and the Hydra configs."""

import math

import pytest
import torch
from omegaconf import OmegaConf

import ropebench.run.config
from ropebench.core.model import GPT
from ropebench.core.pe import registry
from ropebench.errors import UserError
from ropebench.run.config import ModelConfig

NEW = ("xpos", "kerple", "fire")
BIAS = ("kerple", "fire")


def make_pe(name, n_embd=16, n_head=2, **overrides):
    entry = registry()[name]
    cfg = OmegaConf.structured(entry.config_cls(**overrides))
    return entry.cls(cfg, n_embd=n_embd, n_head=n_head, train_seq_len=8)


def make_gpt(name, **overrides):
    model_cfg = OmegaConf.structured(ModelConfig(n_layer=2, n_head=4, n_embd=32))
    pe_cfg = OmegaConf.structured(registry()[name].config_cls(**overrides))
    return GPT(model_cfg, pe_cfg, vocab_size=257, train_seq_len=16)


def grids(T):
    """Broadcastable (q_idx, kv_idx) index tensors for calling a score_mod on a whole (1, H, T, T) grid."""
    idx = torch.arange(T)
    return idx[None, None, :, None], idx[None, None, None, :]


# --------------------------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_xpos_golden(pairing):
    torch.manual_seed(0)
    H, T, D, scale_base, base = 2, 12, 8, 4.0, 100.0
    pe = make_pe("xpos", n_embd=H * D, n_head=H, scale_base=scale_base, base=base, pairing=pairing)
    q, k = torch.randn(1, H, T, D), torch.randn(1, H, T, D)
    q_rot, k_rot = pe.qk(q, k, torch.arange(T))
    actual = (q_rot.double() @ k_rot.double().transpose(-1, -2))[0]  # (H, n, m)

    # Published form: pair i as a complex number z; score(n, m) = sum_i zeta_i^((n - m)/scale_base)
    # * Re(zq_i[n] conj(zk_i[m]) e^{i (n - m) theta_i}), theta_i = base^(-2i/D), zeta_i = (2i + 0.4D)/(1.4D).
    i = torch.arange(D // 2, dtype=torch.float64)
    theta = base ** (-2 * i / D)
    zeta = (2 * i + 0.4 * D) / (1.4 * D)
    qd, kd = q[0].double(), k[0].double()
    if pairing == "half":
        zq = torch.complex(qd[..., : D // 2], qd[..., D // 2 :])
        zk = torch.complex(kd[..., : D // 2], kd[..., D // 2 :])
    else:
        zq, zk = torch.complex(qd[..., 0::2], qd[..., 1::2]), torch.complex(kd[..., 0::2], kd[..., 1::2])
    rel = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()  # n - m
    phase = torch.exp(1j * rel[..., None] * theta)  # (n, m, pair)
    decay = zeta ** (rel[..., None] / scale_base)
    expected = (decay * (zq[:, :, None, :] * zk[:, None, :, :].conj() * phase).real).sum(-1)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    # The decay is really there: the plain-RoPE score (no zeta) differs.
    plain = ((zq[:, :, None, :] * zk[:, None, :, :].conj() * phase).real).sum(-1)
    assert (plain - expected).abs().max() > 0.1


def test_kerple_golden():
    torch.manual_seed(0)
    H, T = 3, 10
    pe = make_pe("kerple", n_embd=H * 4, n_head=H)
    with torch.no_grad():
        pe.raw_a.copy_(torch.randn(H))
        pe.raw_p.copy_(torch.randn(H))
    a = torch.log1p(pe.raw_a.double().exp())  # softplus, float64
    p = torch.log1p(pe.raw_p.double().exp())
    i = torch.arange(T, dtype=torch.float64)
    distance = (i[:, None] - i[None, :]).abs()
    expected = -p[:, None, None] * torch.log(1 + a[:, None, None] * distance)
    actual = pe.bias(T, torch.device("cpu"))
    assert actual.shape == (H, T, T) and actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-6)


def test_fire_golden():
    torch.manual_seed(0)
    H, T, init_L = 3, 12, 4.0  # a small L so max(L, i) switches from L to i inside the sequence
    pe = make_pe("fire", n_embd=H * 4, n_head=H, init_L=init_L)
    with torch.no_grad():
        for param in pe.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
    c, L = pe.c_and_L()
    c, L = c.double(), L.double()
    w1, b1 = pe.fc1.weight.double()[:, 0], pe.fc1.bias.double()
    w2, b2 = pe.fc2.weight.double(), pe.fc2.bias.double()

    def psi(x):
        return torch.log(c * x + 1)

    actual = pe.bias(T, torch.device("cpu"))
    assert actual.shape == (H, T, T) and actual.dtype == torch.float32
    for q_pos in range(T):
        for kv_pos in range(q_pos + 1):  # the causal part, where the published formula is defined
            normalizer = psi(torch.maximum(L, torch.tensor(q_pos, dtype=torch.float64)))
            x = psi(torch.tensor(q_pos - kv_pos, dtype=torch.float64)) / normalizer
            expected = w2 @ torch.relu(w1 * x + b1) + b2
            torch.testing.assert_close(actual[:, q_pos, kv_pos].double(), expected, rtol=1e-5, atol=1e-5)


def test_kerple_starts_as_the_authors_code():
    # The KERPLE repository's ParallelKerpleLog: p = 2 * rand(H), a = rand(H), both clamped at 0.01 before use.
    # Checked on the distribution (many heads), not on the order of the draws.
    torch.manual_seed(5)
    H = 20000
    a, p = make_pe("kerple", n_embd=H, n_head=H).params()
    for values, high in ((a, 1.0), (p, 2.0)):
        assert values.min().item() == pytest.approx(0.01, rel=1e-4) and values.max().item() <= high * (1 + 1e-5)
        floored = (values - 0.01).abs() < 1e-6
        assert floored.float().mean().item() == pytest.approx(0.01 / high, abs=0.003)  # P(U(0, high) < 0.01)
        rest = values[~floored].double()
        assert rest.mean().item() == pytest.approx(high / 2, rel=0.02)
        assert rest.std().item() == pytest.approx(high / math.sqrt(12), rel=0.02)  # uniform, not normal
    a, p = make_pe("kerple", n_embd=6, n_head=3, init="constant", init_a=0.01, init_p=50.0).params()
    torch.testing.assert_close(a, torch.full((3,), 0.01), rtol=1e-5, atol=0)  # softplus inverse is exact
    torch.testing.assert_close(p, torch.full((3,), 50.0), rtol=1e-6, atol=0)


def test_fire_defaults_and_positive_scalars():
    pe = make_pe("fire")  # training length 8
    c, L = pe.c_and_L()
    assert c.item() == pytest.approx(0.1, rel=1e-5) and L.item() == pytest.approx(8.0)
    assert make_pe("fire", init_L=300.0).c_and_L()[1].item() == pytest.approx(300.0)
    with torch.no_grad():
        pe.raw_c.fill_(-50.0)
        pe.log_L_scale.fill_(-50.0)
    c, L = pe.c_and_L()
    assert c.item() > 0 and L.item() > 0
    assert torch.isfinite(pe.bias(8, torch.device("cpu"))).all()


def test_fire_bias_is_the_same_in_chunks():
    pe = make_pe("fire", init_L=3.0)
    with torch.no_grad():
        for param in pe.parameters():
            param.add_(torch.randn_like(param) * 0.3)
        full = pe.bias(40, torch.device("cpu"))  # no_grad: the chunked path
    with torch.enable_grad():
        direct = pe.bias(40, torch.device("cpu"))
    torch.testing.assert_close(full, direct.detach())


# ------------------------------------------------------------------------------------ bias() vs score_mod()


@pytest.mark.parametrize("name", BIAS)
def test_bias_and_score_mod_agree(name):
    torch.manual_seed(1)
    H, T = 4, 9
    pe = make_pe(name, n_embd=H * 4, n_head=H, **({"init_L": 5.0} if name == "fire" else {}))
    with torch.no_grad():
        for param in pe.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    q_idx, kv_idx = grids(T)
    b, h = torch.zeros(1, 1, 1, 1, dtype=torch.long), torch.arange(H)[None, :, None, None]
    from_mod = pe.score_mod(T, torch.device("cpu"))(torch.zeros(1, H, T, T), b, h, q_idx, kv_idx)[0]
    dense = pe.bias(T, torch.device("cpu"))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(from_mod[:, causal], dense[:, causal], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name", BIAS)
def test_flex_attention_matches_dense_bias(name):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(2)
    H, T, D = 2, 16, 8
    pe = make_pe(name, n_embd=H * D, n_head=H, **({"init_L": 6.0} if name == "fire" else {}))
    q, k, v = (torch.randn(1, H, T, D) for _ in range(3))
    with torch.no_grad():  # FlexAttention runs forward-only on the CPU
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = pe.bias(T, torch.device("cpu")).masked_fill(~causal, -math.inf)
        dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[None])
        block_mask = flex.create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, T, T, device="cpu")
        score_mod = pe.score_mod(T, torch.device("cpu"))
        out = flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
    torch.testing.assert_close(out, dense, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ the encodings in a GPT


@pytest.mark.parametrize("name", NEW)
def test_causality_in_gpt(name):
    torch.manual_seed(3)
    model = make_gpt(name).eval()
    tokens = torch.randint(0, 257, (1, 24))
    changed = tokens.clone()
    changed[0, 10] = (tokens[0, 10] + 1) % 257
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert (a[:, 10:] - b[:, 10:]).abs().amax(dim=-1).min() > 0  # every later position sees the change


@pytest.mark.parametrize("name", NEW)
def test_a_few_training_steps_lower_the_loss(name):
    torch.manual_seed(4)
    model = make_gpt(name)
    tokens = torch.randint(0, 257, (4, 17))
    x, y = tokens[:, :-1], tokens[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    # The position parameters are in the graph (they get a gradient), not dead weight.
    for param in model.pe.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()


def test_xpos_refuses_lengths_it_cannot_represent():
    # scale_base 0.5 makes the limit small enough to test: at the limit every logit is finite, past it the
    # model raises a one-line UserError instead of computing inf - inf = NaN in the masked corner.
    model = make_gpt("xpos", scale_base=0.5).eval()
    limit = model.pe.max_len()
    assert 20 < limit < 60
    with torch.no_grad():
        logits, _ = model(torch.randint(0, 257, (1, limit)))
        assert torch.isfinite(logits).all()
        with pytest.raises(UserError, match="xpos"):
            model(torch.randint(0, 257, (1, limit + 1)))
    assert make_gpt("xpos").pe.max_len() > 16 * 2048  # the default scale_base allows 16x a 2k training length


def test_xpos_tables_are_float32_under_autocast():
    pe = make_pe("xpos")
    q = torch.randn(1, 2, 6, 8, dtype=torch.bfloat16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        tables = pe.tables(6, torch.device("cpu"))
        q_rot, _ = pe.qk(q, q, torch.arange(6))
    assert all(t.dtype == torch.float32 for t in tables) and q_rot.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "name, overrides",
    [("xpos", {"scale_base": 0.0}), ("xpos", {"pairing": "zigzag"}), ("kerple", {"init_a": -1.0}),
     ("kerple", {"variant": "power"}), ("kerple", {"init": "normal"}), ("fire", {"init_L": -1.0}),
     ("fire", {"init_c": -0.1}), ("fire", {"mlp_width": 0}), ("t5", {"max_distance": 16}),
     ("t5", {"max_distance": -1}), ("t5", {"num_buckets": 1})],
)
def test_bad_config_values(name, overrides):
    with pytest.raises(UserError):
        make_pe(name, **overrides)


# ------------------------------------------------------------------------------------------------ Hydra


@pytest.mark.parametrize("name", sorted(registry()))
def test_yaml_composes_with_hydra(name):
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    ropebench.run.config.register_schemas()
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(ropebench.run.config.conf_dir()), version_base="1.3"):
        cfg = hydra.compose("config", overrides=[f"pe={name}"])
    assert cfg.pe.name == name
    defaults = OmegaConf.to_container(OmegaConf.structured(registry()[name].config_cls()))
    # The YAML holds the learning-rate multiple chosen on validation (results/lr_mult); the schema keeps 1, so a
    # run config written before the field existed reads back as the rate it trained with.
    assert defaults["lr_mult"] == 1.0 and cfg.pe.lr_mult >= 1.0
    defaults["lr_mult"] = cfg.pe.lr_mult
    assert OmegaConf.to_container(cfg.pe) == defaults
    model = GPT(OmegaConf.structured(ModelConfig(n_layer=1, n_head=2, n_embd=16)), cfg.pe, vocab_size=257,
                train_seq_len=16)
    assert model.pe.cfg.name == name
