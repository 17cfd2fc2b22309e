"""The GPT around the encodings: who initialises what, declared capabilities, the FlexAttention fallback, the
registries' refusal of duplicate names, T5's buckets under training, and the unpadded vocabulary."""

import math
from dataclasses import dataclass

import pytest
import torch
from helpers import pe_config, tiny_model
from omegaconf import OmegaConf

import ropebench.core.pe as pe_registry
from ropebench.core.model import GPT
from ropebench.core.pe import register, registry
from ropebench.core.pe.base import PEConfig, PositionEncoding
from ropebench.errors import UserError
from ropebench.run.config import ModelConfig

ALL = sorted(registry())
BIAS = ("alibi", "fire", "kerple", "t5")
ROTARY = ("rope", "p_rope")  # the encodings that take evaluation-time RoPE scaling
LOGIT_TERM = ("cope", "fox")


def perturbed(model):
    """Random non-zero encoding parameters, so a dropped or misplaced bias changes the logits."""
    with torch.no_grad():
        for p in model.pe.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


# ------------------------------------------------------------------------------------------- initialisation


def test_gpt_leaves_the_encodings_own_init_alone(monkeypatch):
    snapshots = {}
    build = pe_registry.build

    def spy(cfg, **dims):
        pe = build(cfg, **dims)
        snapshots[cfg.name] = {k: v.clone() for k, v in pe.state_dict().items()}
        return pe

    monkeypatch.setattr(pe_registry, "build", spy)
    for name in ALL:
        model = tiny_model(name)
        after = model.pe.state_dict()
        assert after.keys() == snapshots[name].keys()
        for key, value in snapshots[name].items():
            assert torch.equal(after[key], value), f"GPT re-initialised pe.{key} of {name}"
    assert snapshots["fire"]["fc1.weight"].abs().max() > 0.1  # PyTorch's U(-1, 1) for one input, not N(0, 0.02)


def test_t5_table_starts_at_zero_and_learned_positions_at_gpt2_scale():
    assert torch.count_nonzero(tiny_model("t5").pe.relative_bias.weight) == 0
    wpe = tiny_model("learned", n_embd=128, train_seq_len=256).pe.wpe.weight
    assert wpe.std().item() == pytest.approx(0.02, rel=0.05)


def test_model_weights_do_not_depend_on_the_encoding():
    reference = {k: v for k, v in tiny_model("nope").state_dict().items()}
    for name in ALL:
        own = {k: v for k, v in tiny_model(name).state_dict().items() if not k.startswith("pe.")}
        assert own.keys() == reference.keys()
        assert all(torch.equal(v, reference[k]) for k, v in own.items()), name


def test_gpt2_init_of_the_models_own_weights():
    model = tiny_model("nope", n_layer=4, n_embd=128)
    params = dict(model.named_parameters())
    assert params["wte.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert params["blocks.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert params["blocks.3.mlp.c_proj.weight"].std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.05)
    assert torch.equal(params["ln_f.weight"], torch.ones(128)) and "ln_f.bias" not in params
    assert isinstance(model.ln_f, torch.nn.LayerNorm)


# ---------------------------------------------------------------------------------------------- capabilities


def test_capabilities_are_declared():
    for name in ALL:
        pe = tiny_model(name).pe
        assert pe.has_bias() == (name in BIAS), name
        assert pe.has_logit_term() == (name in LOGIT_TERM), name
        assert pe.supports_rope_scaling == (name in ROTARY) == hasattr(pe, "set_scaling"), name
        assert pe.uses_value_hooks() is False, name
        expected = {"rope": (8, 10000.0), "xpos": (8, 10000.0)}.get(name)
        assert pe.decay_params() == expected, name
    assert tiny_model("rope", rotary_dim=4, base=500.0).pe.decay_params() == (4, 500.0)


def test_value_hooks_run_only_when_declared(monkeypatch):
    calls = []

    def counting(self, v, pos):
        calls.append(v.shape)
        return v

    monkeypatch.setattr(type(tiny_model("rope").pe), "value", counting)
    tokens = torch.randint(0, 257, (1, 8))
    tiny_model("rope")(tokens)
    assert calls == []  # default RoPE: values untouched, hook never called
    model = tiny_model("rope", rotate_values=True)
    assert model.pe.uses_value_hooks()
    model(tokens)
    assert calls == [(1, 4, 8, 8)] * 2  # once per layer


# -------------------------------------------------------------------------------------------- FlexAttention


@dataclass
class SlopeConfig(PEConfig):
    name: str = "bias_only_example"
    slope: float = 0.1


class BiasOnly(PositionEncoding):
    """The README's one-file example: a dense bias() and nothing else (no has_bias, no score_mod)."""

    kind = "bias"

    def bias(self, T, device):
        pos = torch.arange(T, device=device, dtype=torch.float32)
        return (self.cfg.slope * (pos[None, :] - pos[:, None])).expand(self.n_head, T, T)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test vanish after it."""
    registry()  # discover the built-in encodings first
    monkeypatch.setattr(pe_registry, "_REGISTRY", dict(pe_registry._REGISTRY))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name", [*ALL, "bias_only_example"])
def test_flex_equals_dense_sdpa_for_every_encoding(name, scratch_registry):
    pytest.importorskip("torch.nn.attention.flex_attention")
    register("bias_only_example", SlopeConfig)(BiasOnly)
    model = perturbed(tiny_model(name, train_seq_len=24))
    tokens = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # FlexAttention runs forward-only on the CPU
        model.attention = "sdpa"
        dense, _ = model(tokens)
        model.attention = "flex"
        flex, _ = model(tokens)
    torch.testing.assert_close(flex, dense, rtol=0, atol=1e-4)
    if name == "bias_only_example":  # the bias is really in both: without it the logits move
        model.pe.cfg.slope = 0.0
        with torch.no_grad():
            assert (model(tokens)[0] - dense).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("name", ALL)
def test_whole_model_compiles_without_a_graph_break(name):
    # fullgraph=True turns any graph break (an OmegaConf lookup, a data-dependent branch) into an error; the
    # eager backend keeps it to tracing, which is all this checks.
    torch._dynamo.reset()
    model = tiny_model(name)
    tokens = torch.randint(0, 257, (2, 16))
    expected, _ = model(tokens)
    compiled, _ = torch.compile(model, backend="eager", fullgraph=True)(tokens)
    torch.testing.assert_close(compiled, expected)


# --------------------------------------------------------------------------------------------- registries


def test_duplicate_encoding_name_is_refused(scratch_registry):
    with pytest.raises(UserError, match="encoding name 'rope' is already registered by ropebench.core.pe.rope.RoPE"):
        register("rope", SlopeConfig)(BiasOnly)
    assert registry()["rope"].cls.__name__ == "RoPE"
    entry = registry()["alibi"]
    register("alibi", entry.config_cls)(entry.cls)  # the same class again is harmless


# ------------------------------------------------------------------------------------------------ T5 buckets


@pytest.mark.parametrize("seq_len", [64, 128, 512])
def test_every_t5_bucket_gets_a_gradient_at_the_default_config(seq_len):
    torch.manual_seed(0)
    model = GPT(OmegaConf.structured(ModelConfig()), pe_config("t5"), vocab_size=257, train_seq_len=seq_len)
    assert model.pe.max_distance == seq_len
    tokens = torch.randint(0, 257, (2, seq_len + 1), generator=torch.Generator().manual_seed(7))
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    grad = model.pe.relative_bias.weight.grad
    assert grad.shape == (32, 4) and torch.count_nonzero(grad) == grad.numel()  # every bucket, every head


def test_t5_with_the_old_fixed_max_distance_leaves_buckets_untrained():
    # The failure the default avoids: max_distance 128 with a 64-token training length.
    model = tiny_model("t5", n_layer=1, n_head=2, train_seq_len=64, max_distance=128).train()
    tokens = torch.randint(0, 257, (2, 65), generator=torch.Generator().manual_seed(7))
    model(tokens[:, :-1], tokens[:, 1:])[1].backward()
    untouched = (model.pe.relative_bias.weight.grad == 0).all(dim=1).nonzero().flatten().tolist()
    assert untouched == [27, 28, 29, 30, 31]


def test_t5_refuses_a_max_distance_inside_the_exact_buckets():
    with pytest.raises(UserError, match=r"^pe.max_distance=16 must exceed num_buckets/2 = 16$"):
        tiny_model("t5", max_distance=16)


# ---------------------------------------------------------------------------------------------- vocabulary


def test_vocabulary_is_not_padded():
    model = tiny_model("nope")
    assert model.wte.weight.shape[0] == 257 and model.lm_head.weight is model.wte.weight
    logits, _ = model(torch.zeros(1, 3, dtype=torch.long))
    assert logits.shape == (1, 3, 257)


def test_checkpoints_with_the_old_padded_vocabulary_still_load(tmp_path):
    from safetensors.torch import load_model, save_model

    old = perturbed(tiny_model("alibi"))
    state = old.state_dict()
    extra = torch.randn(63, 32) * 0.02  # rows 257..319 of a checkpoint from the padded days
    state["wte.weight"] = state["lm_head.weight"] = torch.cat([state["wte.weight"], extra])
    padded = tiny_model("alibi")
    padded.wte.weight.data = state["wte.weight"].clone()  # how such a checkpoint was written
    save_model(padded, str(tmp_path / "model.safetensors"))

    model = tiny_model("alibi", seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # built before loading, as a resumed run does
    load_model(model, str(tmp_path / "model.safetensors"), strict=True)
    hidden = []
    model.ln_f.register_forward_hook(lambda module, args, out: hidden.append(out))
    tokens = torch.randint(0, 257, (2, 10))
    with torch.no_grad():
        logits, _ = model(tokens)
        unpadded, _ = old(tokens)
    assert logits.shape[-1] == 320 and model.lm_head.weight is model.wte.weight
    torch.testing.assert_close(logits[..., :257], unpadded)  # the first 257 columns are the old model's
    torch.testing.assert_close(logits[..., 257:], hidden[0] @ extra.T)  # and the padded rows are the file's
    model.train()(tokens, tokens)[1].backward()
    optimizer.step()  # the optimizer's parameter is the resized one


def test_a_real_vocabulary_mismatch_is_still_an_error():
    state = tiny_model("nope").state_dict()
    state["wte.weight"] = torch.zeros(300, 32)
    with pytest.raises(RuntimeError, match="size mismatch"):
        tiny_model("nope").load_state_dict(state)



def test_a_config_recorded_before_a_setting_existed_gets_its_default():
    # A kerple run recorded before `init` existed (its config.yaml read back as a plain DictConfig).
    old = OmegaConf.create({"name": "kerple", "variant": "log", "init_a": 1.0, "init_p": 1.0})
    model = GPT(OmegaConf.structured(ModelConfig(n_layer=1, n_head=2, n_embd=16)), old, vocab_size=257,
                train_seq_len=16)
    assert model.pe.cfg.init == "uniform" and model.pe.cfg.init_p == 1.0


# ------------------------------------------------------------------------------------------------- optimizer


def test_training_optimizer_is_fused_adamw_that_follows_the_adamw_formula():
    """make_optimizer fuses AdamW on the CPU; its updates follow Loshchilov & Hutter's formula (decoupled weight
    decay on matrices only, bias-corrected moments), computed here by hand for three steps."""
    from ropebench.run.config import TrainConfig
    from ropebench.run.trainer import make_optimizer

    t = TrainConfig()
    model = tiny_model("learned")
    opt = make_optimizer(model, t, torch.device("cpu"))
    assert opt.defaults["fused"] is True
    params = dict(model.named_parameters())
    expect = {n: p.detach().double().clone() for n, p in params.items()}
    m = {n: torch.zeros_like(v) for n, v in expect.items()}
    v2 = {n: torch.zeros_like(v) for n, v in expect.items()}
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 4):
        for n, p in params.items():
            p.grad = torch.randn(p.shape, generator=gen)
            g = p.grad.double()
            decay = t.weight_decay if p.dim() >= 2 else 0.0
            expect[n] *= 1 - t.lr * decay
            m[n] = t.beta1 * m[n] + (1 - t.beta1) * g
            v2[n] = t.beta2 * v2[n] + (1 - t.beta2) * g * g
            m_hat, v_hat = m[n] / (1 - t.beta1 ** step), v2[n] / (1 - t.beta2 ** step)
            expect[n] -= t.lr * m_hat / (v_hat.sqrt() + 1e-8)
        opt.step()
    for n, p in params.items():
        torch.testing.assert_close(p.detach().double(), expect[n], atol=1e-6, rtol=1e-5, msg=n)
