"""Layer patterns and windows, attention temperature with length, against a GPT forward pass written by hand
(tests/oracles.py); the model of one encoding is the pattern of length one; causality of every method; the
methods of conf/method/ compose and build."""

import math

import pytest
import torch
from helpers import pe_config, tiny_model
from omegaconf import OmegaConf
from oracles import manual_logits, rope_oracle

from ropebench.core.model import GPT
from ropebench.core.pe.base import PositionEncoding
from ropebench.errors import UserError
from ropebench.run.config import ModelConfig

TOL = dict(rtol=0, atol=1e-5)


def gpt(pe="rope", train_seq_len=16, seed=0, n_layer=4, pe_overrides=None, **model):
    torch.manual_seed(seed)
    cfg = OmegaConf.structured(ModelConfig(n_layer=n_layer, n_head=4, n_embd=32, **model))
    return GPT(cfg, pe_config(pe, **(pe_overrides or {})), vocab_size=257, train_seq_len=train_seq_len).eval()


def tokens(T=24, seed=5):
    return torch.randint(0, 257, (2, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- layer patterns


@pytest.mark.parametrize("name", ["rope", "alibi", "t5", "fox", "learned"])
def test_a_pattern_of_one_encoding_is_the_plain_model_bitwise(name):
    plain, pattern = gpt(name), gpt(name, layers=[name, name])
    assert plain.state_dict().keys() == pattern.state_dict().keys()
    with torch.no_grad():
        for p, q in zip(plain.pe.parameters(), pattern.pe.parameters()):
            p.add_(0.3), q.add_(0.3)
        assert torch.equal(plain(tokens(16))[0], pattern(tokens(16))[0])


@pytest.mark.parametrize("layers,windows,rotate", [
    (["rope", "rope", "rope", "nope"], [], [True, True, True, False]),
    (["rope", "nope"], [], [True, False, True, False]),  # repeated over the depth
    (["rope", "rope", "rope", "nope"], [5, 5, 5, None], [True, True, True, False]),  # RNoPE-SWA
    (["nope", "rope"], [3, None], [False, True, False, True]),
])
def test_layer_pattern_and_windows_equal_hand_written_attention(layers, windows, rotate):
    model = gpt(layers=layers, windows=windows)
    ids = tokens()
    with torch.no_grad():
        ours = model(ids)[0]
    per_layer = (windows or [None] * len(layers)) * (4 // len(layers))
    expected = manual_logits(model, ids, rotate=rotate, windows=per_layer)
    torch.testing.assert_close(ours.double(), expected, **TOL)
    if windows:  # the windows really cut: without them the logits move
        assert (manual_logits(model, ids, rotate=rotate) - expected).abs().max() > 1e-3


def test_per_example_position_ids_reach_every_layer_of_a_pattern():
    """Position ids (B, T) (PoSE, randomized positions) in a pattern of relative encodings with a window: each row
    shifted by its own offset gives the logits of positions 0 .. T-1 (RoPE and ALiBi see only distances), through
    the per-example dense bias and the window mask together."""
    model = gpt(layers=["rope", "alibi"], windows=[5, None])
    ids = tokens(16)
    pos = torch.arange(16)[None, :] + torch.tensor([[0], [7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, pos=pos)[0], model(ids)[0], **TOL)
        moved = model(ids, pos=torch.stack([pos[0], pos[0] * 2]))[0]  # a row with gaps is another input
    assert (moved[1] - model(ids)[0][1]).abs().max() > 1e-3


def test_each_layers_encoding_is_a_position_encoding_of_the_model():
    model = gpt("rope", layers=["rope", "t5", "fox", "nope"])
    encodings = {m for m in model.modules() if isinstance(m, PositionEncoding)}
    assert {layer.pe for layer in model.layers} <= encodings
    assert [layer.use for layer in model.layers] == [0, 0, 0, 0] and model.pe.n_layer == 1
    keys = model.state_dict().keys()
    assert "layer_pe.t5.relative_bias.weight" in keys and "layer_pe.fox.gate.weight" in keys
    # Another encoding in the pattern takes its defaults, and its own init (not GPT-2's N(0, 0.02)).
    assert torch.count_nonzero(model.layer_pe.t5.relative_bias.weight) == 0


def test_a_run_recorded_before_layer_patterns_loads_its_weights():
    old_model_cfg = OmegaConf.create({"name": "tiny", "n_layer": 2, "n_head": 4, "n_embd": 32, "dropout": 0.0,
                                      "bias": False, "attention": "auto"})  # config.yaml of an older run
    state = tiny_model("t5").state_dict()
    model = GPT(old_model_cfg, pe_config("t5"), vocab_size=257, train_seq_len=16).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(model(tokens(16))[0], tiny_model("t5")(tokens(16))[0])


@pytest.mark.parametrize("model,pe,message", [
    ({"layers": ["rope", "foo"]}, "rope", "unknown encoding 'foo' in model.layers"),
    ({"layers": ["rope", "rope", "nope"]}, "rope", "model.layers has 3 entries, which does not divide model.n_layer=4"),
    ({"layers": ["alibi", "nope"]}, "rope", "must include pe=rope"),
    ({"layers": ["rope", "nope"], "windows": [4]}, "rope", "one entry per entry of model.layers (2)"),
    ({"windows": [0]}, "rope", "positive integers"),
    ({"windows": [-3]}, "rope", "positive integers"),
    ({"logit_scale": "llama4"}, "rope", "has none"),
])
def test_bad_layer_settings_are_one_line(model, pe, message):
    with pytest.raises(UserError) as error:
        gpt(pe, **model)
    assert message in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------ attention temperature


def test_logn_is_one_up_to_the_training_length_bitwise():
    model = gpt(train_seq_len=16)
    ids = tokens(16)
    with torch.no_grad():
        plain, longer = model(ids)[0], model(tokens(40))[0]
        model.set_logit_scale({"type": "logn"})
        assert torch.equal(model(ids)[0], plain)
        assert not torch.equal(model(tokens(40))[0], longer)  # past L it scales


@pytest.mark.parametrize("pe", ["rope", "nope", "alibi"])
def test_logn_scales_queries_by_log_base_l_of_the_position(pe):
    model = gpt(pe, train_seq_len=8)
    model.set_logit_scale({"type": "logn"})
    ids = tokens(30)
    with torch.no_grad():
        ours = model(ids)[0]
    position = torch.arange(1, 31, dtype=torch.float64)  # Qwen: log_L(i) for 1-based i > L, else 1
    scale = torch.where(position > 8, position.log() / math.log(8), torch.ones(30))[:, None]
    if pe == "alibi":  # the bias is not scaled: only q . k
        slopes = model.pe.slopes.double()
        i, j = torch.arange(30)[:, None], torch.arange(30)[None, :]
        expected = manual_logits(model, ids, scales=[scale] * 4, extra=lambda *a: slopes[:, None, None] * (j - i))
    else:
        expected = manual_logits(model, ids, rotate=[pe == "rope"] * 4, scales=[scale] * 4)
    torch.testing.assert_close(ours.double(), expected, **TOL)


def test_ssmax_multiplies_logits_by_s_log_n_per_layer_and_head():
    model = gpt(train_seq_len=16, logit_scale="ssmax")
    assert model.ssmax_s.shape == (16,) and torch.allclose(model.ssmax_s, torch.full((16,), 1 / math.log(16)))
    with torch.no_grad():
        model.ssmax_s.copy_(torch.rand(16) + 0.2)
    ids = tokens(20)
    with torch.no_grad():
        ours = model(ids)[0]
    n = torch.arange(1, 21, dtype=torch.float64)  # keys a causal query attends
    s = model.ssmax_s.detach().double().view(4, 4)
    expected = manual_logits(model, ids, rotate=[True] * 4, scales=[s[i][:, None, None] * n.log()[:, None]
                                                                    for i in range(4)])
    torch.testing.assert_close(ours.double(), expected, **TOL)
    with pytest.raises(UserError, match="trained with model.logit_scale=ssmax"):
        model.set_logit_scale({"type": "logn"})


def test_llama4_temperature_acts_on_nope_layers_only():
    model = gpt(train_seq_len=8, layers=["rope", "rope", "rope", "nope"], logit_scale="llama4")
    ids = tokens(30)
    with torch.no_grad():
        ours = model(ids)[0]
    position = torch.arange(30, dtype=torch.float64)  # HF Llama4: 1 + 0.1 log(floor((p + 1) / F) + 1)
    temperature = (1 + 0.1 * torch.log(torch.floor((position + 1) / 8) + 1))[:, None]
    expected = manual_logits(model, ids, rotate=[True, True, True, False], scales=[None, None, None, temperature])
    torch.testing.assert_close(ours.double(), expected, **TOL)


def test_drope_beta_is_one_plus_c_log_s():
    model = gpt("nope", train_seq_len=8)
    ids = tokens(32)
    model.set_logit_scale({"type": "beta", "c": 0.412})
    with torch.no_grad():
        ours = model(ids)[0]
    beta = torch.tensor(1 + 0.412 * math.log(32 / 8), dtype=torch.float64)
    torch.testing.assert_close(ours.double(), manual_logits(model, ids, scales=[beta] * 4), **TOL)


def test_drop_rope_makes_every_rotary_layer_nope_bitwise():
    model, nope = gpt("rope", layers=["rope", "nope"]), gpt("nope")
    nope.load_state_dict(model.state_dict())
    ids = tokens()
    with torch.no_grad():
        before = model(ids)[0]
        model.drop_rope()
        assert torch.equal(model(ids)[0], nope(ids)[0]) and not torch.equal(before, nope(ids)[0])
    assert model.state_dict().keys() == nope.state_dict().keys()


# -------------------------------------------------------------------------------------- every method, causal


METHODS = {"irope": dict(layers=["rope", "rope", "rope", "nope"]),
           "rnope_swa": dict(layers=["rope", "rope", "rope", "nope"], windows=[3, 3, 3, None]),
           "llama4": dict(layers=["rope", "rope", "rope", "nope"], logit_scale="llama4"),
           "ssmax": dict(logit_scale="ssmax"),
           "alibi+cope": dict(layers=["alibi", "cope"]), "t5+fox": dict(layers=["t5", "fox"])}


@pytest.mark.parametrize("name", list(METHODS))
def test_causality_of_the_methods(name):
    settings = METHODS[name]
    model = gpt(settings.get("layers", ["rope"])[0], train_seq_len=8, **settings)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for spec in (None, {"type": "logn"}) if name != "ssmax" and name != "llama4" else (None,):
            model.set_logit_scale(spec)
            ids = tokens(24)
            changed = ids.clone()
            changed[:, 10] = (changed[:, 10] + 1) % 257
            a, b = model(ids)[0], model(changed)[0]
            assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
            assert (a[:, 10:] - b[:, 10:]).abs().amax(dim=-1).min() > 0


def test_rope_oracle_is_ropebenchs_rotation():  # the oracle above is checked once against the encoding
    model = gpt()
    q = torch.randn(1, 4, 12, 8)
    torch.testing.assert_close(model.pe.qk(q, q, torch.arange(12))[0].double(), rope_oracle(q), **TOL)


# --------------------------------------------------------------------------------------- conf/method, sweeps


def _method_names():
    from ropebench.run.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))


@pytest.mark.parametrize("name", _method_names())
def test_every_method_config_composes_validates_and_trains_a_step(name):
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    import ropebench.run.config as config
    import ropebench.run.validate as validate

    config.register_schemas()
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3"):
        cfg = hydra.compose("config", overrides=[f"method={name}"])
    validate.validate_config(cfg)
    assert cfg.label == name
    model = GPT(cfg.model, cfg.pe, vocab_size=257, train_seq_len=int(cfg.train.seq_len))
    ids = tokens(17)
    _, loss = model(ids[:, :-1], ids[:, 1:])
    loss.backward()
    assert math.isfinite(loss.item())
