"""Every RoPE backend against the reference: values, gradients, pairings, partial rotary, strides.

The Triton kernel runs on the CPU under TRITON_INTERPRET=1, which has to be in the environment before
``ropebench.core.rope.triton_kernel`` is first imported -- hence the assignment above the ropebench imports.
"""

import os
import sys
import types

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ropebench.core.rope import backends  # noqa: E402
from ropebench.core.rope.freqs import rope_inv_freq, rope_tables  # noqa: E402
from ropebench.core.rope.reference import apply_rope  # noqa: E402
from ropebench.errors import UserError  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CUDA = DEVICE.type == "cuda"
AVAILABLE = backends.available(DEVICE)
# Compiling takes seconds per graph on the CPU, so there it gets one case of its own (test_compile_backend).
FAST = [name for name in AVAILABLE if CUDA or name != "compile"]
needs_triton = pytest.mark.skipif("triton" not in AVAILABLE, reason="triton backend not available here")

# (B, H, T, D, rotary_dim): odd heads and lengths, head dims 8/12/16, full and partial rotary.
SHAPES = [(2, 3, 7, 8, 8), (1, 3, 13, 12, 12), (2, 3, 7, 16, 8), (1, 3, 13, 12, 8)]


def tables(rotary_dim, n, device=DEVICE):
    inv_freq, _ = rope_inv_freq(rotary_dim, 10000.0)
    return rope_tables(inv_freq, torch.arange(n, device=device))


def make_qk(B, H, T, D, dtype, layout, seed=0):
    """q, k and the leaf their gradients land in; 'qkv' is the model's permuted view of a fused projection."""
    g = torch.Generator().manual_seed(seed)
    if layout == "qkv":
        leaf = torch.randn(B, T, 3 * H * D, generator=g).to(DEVICE, dtype).requires_grad_()
        q, k, _ = leaf.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        return q, k, leaf
    leaf = torch.randn(2, B, H, T, D, generator=g).to(DEVICE, dtype).requires_grad_()
    return leaf[0], leaf[1], leaf


def run(fn, q, k, leaf, cos, sin, pairing, grads):
    q_rot, k_rot = fn(q, k, cos, sin, pairing)
    (grad,) = torch.autograd.grad((q_rot, k_rot), leaf, grads)
    return q_rot, k_rot, grad


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def assert_within_bf16_ulp(actual, expected_fp32):
    expected = expected_fp32.to(torch.bfloat16).float()
    # One bf16 ulp (8 significant bits) at the expected value; the interpreter truncates where GPUs round.
    ulp = torch.exp2(torch.floor(torch.log2(expected.abs().clamp_min(1e-30))) - 7)
    diff = (actual.float() - expected).abs()
    assert bool((diff <= ulp).all()), f"max excess over one bf16 ulp: {(diff - ulp).max().item()}"


def check_backend(name, shape, pairing, dtype, layout):
    B, H, T, D, rotary_dim = shape
    cos, sin = tables(rotary_dim, T)
    q, k, leaf = make_qk(B, H, T, D, dtype, layout)
    before = leaf.detach().clone()
    g = torch.Generator().manual_seed(1)
    grads = tuple(torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype) for _ in range(2))
    out = run(backends.backends()[name].apply, q, k, leaf, cos, sin, pairing, grads)
    assert torch.equal(leaf.detach(), before), "the backend wrote into its inputs"
    assert out[0].shape == q.shape and out[0].dtype == dtype and out[1].dtype == dtype
    # The reference in fp32 on fp32 copies of the same values is the ground truth for both dtypes.
    leaf32 = leaf.detach().float().requires_grad_()
    view = leaf32.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4) if layout == "qkv" else leaf32
    q32, k32 = view[0], view[1]
    expected = run(apply_rope, q32, k32, leaf32, cos, sin, pairing, tuple(x.float() for x in grads))
    for got, want in zip(out, expected):
        if dtype == torch.float32:
            assert rel_err(got, want) <= 1e-6
        else:
            assert_within_bf16_ulp(got, want)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}T{}D{}r{}".format(*s))
def test_backend_matches_reference(name, pairing, dtype, shape):
    check_backend(name, shape, pairing, dtype, "qkv")


@pytest.mark.parametrize("name", FAST)
def test_backend_contiguous_input(name):
    check_backend(name, (2, 3, 7, 16, 16), "half", torch.float32, "contiguous")


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("pairing, channel, partner", [("half", 1, 5), ("interleaved", 2, 3)])
def test_which_channels_are_paired(name, pairing, channel, partner):
    """A 1 in one channel at position 1 must turn into cos(theta) there and sin(theta) in its partner only."""
    if name == "liger" and pairing != "half":
        pytest.skip("liger is half-split only")
    D, T = 8, 2
    cos, sin = tables(D, T)
    q = torch.zeros(1, 1, T, D, device=DEVICE)
    q[0, 0, 1, channel] = 1.0
    q_rot, _ = backends.backends()[name].apply(q, q.clone(), cos, sin, pairing)
    theta = torch.tensor(1.0) * 10000.0 ** (-2 * (channel // 2 if pairing == "interleaved" else channel) / D)
    expected = torch.zeros(D)
    expected[channel], expected[partner] = torch.cos(theta), torch.sin(theta)
    torch.testing.assert_close(q_rot[0, 0, 1].float().cpu(), expected, atol=1e-6, rtol=0)
    assert not q_rot[0, 0, 0].any(), "position 0 must stay zero"


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_scores_depend_only_on_distance(name, pairing):
    T, D = 13, 16
    cos, sin = tables(D, T)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(D, generator=g).to(DEVICE).expand(1, 1, T, D)
    k = torch.randn(D, generator=g).to(DEVICE).expand(1, 1, T, D)
    q_rot, k_rot = backends.backends()[name].apply(q, k, cos, sin, pairing)
    scores = (q_rot[0, 0] @ k_rot[0, 0].T).cpu()
    torch.testing.assert_close(scores[1:, 1:], scores[:-1, :-1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(scores[0, 1], scores[0, 2]), "scores must change with distance"


def test_reference_gradcheck_float64():
    cos, sin = (t.double() for t in tables(8, 5, device="cpu"))
    q = torch.randn(1, 2, 5, 12, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 5, 12, dtype=torch.float64, requires_grad=True)
    for pairing in ("half", "interleaved"):
        assert torch.autograd.gradcheck(lambda q, k, p=pairing: apply_rope(q, k, cos, sin, p), (q, k))


def test_complex_backend_gradcheck_float64():
    apply = backends.backends()["complex"].apply
    cos, sin = (t.double() for t in tables(8, 5, device="cpu"))
    q = torch.randn(1, 2, 5, 12, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 5, 12, dtype=torch.float64, requires_grad=True)
    for pairing in ("half", "interleaved"):
        assert torch.autograd.gradcheck(lambda q, k, p=pairing: apply(q, k, cos, sin, p), (q, k))


@needs_triton
@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_triton_position_offset(pairing):
    from ropebench.core.rope.triton_kernel import rope_qk

    B, H, T, D, offset = 1, 3, 7, 12, 6
    cos, sin = tables(8, offset + T)
    q, k, leaf = make_qk(B, H, T, D, torch.float32, "qkv")
    grads = (torch.randn(B, H, T, D, device=DEVICE), torch.randn(B, H, T, D, device=DEVICE))
    got = run(lambda *a: rope_qk(*a, offset=offset), q, k, leaf, cos, sin, pairing, grads)
    want = run(apply_rope, q, k, leaf, cos[offset:], sin[offset:], pairing, grads)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= 1e-6


@needs_triton
def test_triton_grouped_kv_heads():
    from ropebench.core.rope.triton_kernel import rope_qk

    cos, sin = tables(16, 5)
    q, k = torch.randn(2, 4, 5, 16, device=DEVICE), torch.randn(2, 1, 5, 16, device=DEVICE)
    for a, b in zip(rope_qk(q, k, cos, sin), apply_rope(q, k, cos, sin)):
        assert rel_err(a, b) <= 1e-6


@needs_triton
def test_triton_rejects_bad_input():
    from ropebench.core.rope.triton_kernel import rope_qk

    cos, sin = tables(8, 4)
    q = torch.randn(1, 2, 4, 8, device=DEVICE)
    with pytest.raises(UserError, match="pairing 'neox'"):
        rope_qk(q, q, cos, sin, "neox")
    with pytest.raises(UserError, match="offset 1"):
        rope_qk(q, q, cos, sin, offset=1)
    with pytest.raises(UserError, match="rotary_dim"):
        rope_qk(q[..., :4], q[..., :4], cos, sin)


def _fake_liger_rotate(x, cos_full, sin_full):
    # Liger's contract (its rotary kernel): transpose to (B, T, H, D), .contiguous() (no-op if laid out so already),
    # rotate that storage in place by the half-split rule using the first half of the full-width tables.
    xt = x.transpose(1, 2).contiguous()
    half = xt.shape[-1] // 2
    c, s = cos_full[0, :, None, :half], sin_full[0, :, None, :half]
    x1, x2 = xt[..., :half].clone(), xt[..., half:].clone()
    xt[..., :half] = x1 * c - x2 * s
    xt[..., half:] = x2 * c + x1 * s
    return xt.transpose(1, 2)


class _FakeLigerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        ctx.save_for_backward(cos, sin)
        return _fake_liger_rotate(q, cos, sin), _fake_liger_rotate(k, cos, sin), cos, sin

    @staticmethod
    def backward(ctx, dq, dk, _dcos, _dsin):
        cos, sin = ctx.saved_tensors  # overwrites the incoming gradient in place, as Liger does
        return _fake_liger_rotate(dq, cos, -sin), _fake_liger_rotate(dk, cos, -sin), None, None, None, None


@pytest.fixture
def fake_liger(monkeypatch):
    module = types.ModuleType("liger_kernel.transformers.rope")
    module.liger_rotary_pos_emb = lambda q, k, cos, sin, position_ids=None, unsqueeze_dim=1: (
        _FakeLigerFunction.apply(q, k, cos, sin, position_ids, unsqueeze_dim)
    )
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.rope", module)


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=["full", "partial"])
@pytest.mark.parametrize("layout", ["qkv", "contiguous"])
def test_liger_adapter_against_fake_liger(fake_liger, shape, layout):
    backends.backends()  # make sure the liger backend module is registered
    check_backend("liger", shape, "half", torch.float32, layout)


def test_liger_refuses_interleaved(fake_liger):
    cos, sin = tables(8, 4)
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(UserError, match="pairing=half"):
        backends.backends()["liger"].apply(q, q, cos, sin, "interleaved")


def test_unavailable_reasons_say_how_to_get_it():
    table = backends.backends()
    assert {"torch", "complex", "compile", "triton", "liger"} <= set(table)
    if "liger_kernel" not in sys.modules:
        assert "pip install liger-kernel" in table["liger"].unavailable_reason(torch.device("cpu"))
    assert table["triton"].cuda_rank == max(b.cuda_rank for b in table.values())
    with pytest.raises(UserError, match="unknown rope backend"):
        backends.resolve("nope", DEVICE)


def test_duplicate_backend_name_is_refused(monkeypatch):
    table = backends.backends()
    monkeypatch.setattr(backends, "_BACKENDS", dict(table))  # whatever happens, the real table is restored
    impostor = backends.Backend("torch", lambda q, k, cos, sin, pairing: (q, k), lambda device: None, cuda_rank=99)
    with pytest.raises(UserError, match="rope backend name 'torch' is already registered"):
        backends.register_backend(impostor)
    assert backends.backends()["torch"] is table["torch"]
    backends.register_backend(table["torch"])  # the same backend again is harmless


@needs_triton
def test_training_matches_between_torch_and_triton():
    from ropebench.core.model import GPT
    from ropebench.core.pe import registry
    from ropebench.run.config import ModelConfig

    def losses(backend):
        torch.manual_seed(0)
        model_cfg = OmegaConf.structured(ModelConfig(n_layer=2, n_head=3, n_embd=48, attention="sdpa"))
        pe_cfg = OmegaConf.structured(registry()["rope"].config_cls(backend=backend, rotary_dim=12))
        model = GPT(model_cfg, pe_cfg, vocab_size=64, train_seq_len=8).to(DEVICE)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        tokens = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1)).to(DEVICE)
        out = []
        for _ in range(3):
            _, loss = model(tokens[:, :-1], tokens[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    reference, triton = losses("torch"), losses("triton")
    assert reference[-1] < reference[0]
    assert triton == pytest.approx(reference, abs=1e-5, rel=1e-5)


# Last in the file: on the CPU the compile leaves Inductor's worker pool behind, which slows what follows.
@pytest.mark.skipif("compile" not in AVAILABLE, reason="torch.compile not available here")
def test_compile_backend():
    check_backend("compile", (1, 3, 13, 12, 8), "half", torch.float32, "qkv")


@pytest.mark.skipif(not CUDA or "triton" not in AVAILABLE, reason="needs CUDA and triton")
def test_triton_op_compiles_without_graph_break():
    from ropebench.core.rope.triton_kernel import rope_qk

    cos, sin = tables(64, 128)
    q, k, leaf = make_qk(2, 4, 128, 64, torch.bfloat16, "qkv")
    grads = (torch.randn_like(q), torch.randn_like(k))
    compiled = torch.compile(lambda q, k, cos, sin, p: rope_qk(q, k, cos, sin, p), fullgraph=True)
    got = run(compiled, q, k, leaf, cos, sin, "half", grads)
    want = run(apply_rope, q, k, leaf, cos, sin, "half", grads)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def test_auto_falls_back_when_the_fastest_backend_is_wrong_on_the_device(monkeypatch):
    """pe.backend=auto checks its pick against the reference on first use on a device and falls back with one
    warning naming the backend -- here a CUDA-ranked backend that returns wrong values, on a pretend GPU."""
    import warnings

    from ropebench.core.rope import backends as registry

    def wrong(q, k, cos, sin, pairing):
        return q * 2, k

    bad = registry.Backend("broken_for_test", wrong, lambda device: None, cuda_rank=10**6)
    monkeypatch.setitem(registry._BACKENDS, bad.name, bad)
    monkeypatch.setattr(registry, "_CHECKED", {})
    device = torch.device("cpu")
    table = {name: b for name, b in registry.backends().items() if name in ("torch", bad.name)}
    fake_cuda = type("FakeDevice", (), {"type": "cuda", "__str__": lambda self: "cuda:0"})()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = _pick_with_fake_device(registry, table, fake_cuda, device)
    assert chosen.name == "torch"
    assert any("broken_for_test" in str(w.message) and "differs from the reference" in str(w.message) for w in caught)
    assert registry.agrees_with_reference(table["torch"], device) is None


def _pick_with_fake_device(registry, table, fake, real):
    """_auto with a device that says 'cuda' while tensors live on the CPU (no GPU in CI)."""
    original = registry.agrees_with_reference
    try:
        registry.agrees_with_reference = lambda backend, device: original(backend, real)
        return registry._auto(table, fake)
    finally:
        registry.agrees_with_reference = original


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [16, 8])
def test_fullwidth_backend_is_bitwise_the_reference_in_fp32(pairing, rotary_dim):
    """`auto`'s CPU pick computes x1*cos + x2*(-sin) where the reference computes x1*cos - x2*sin: the same
    floating-point operations, so every committed fp32 number stays exactly what the reference gave."""
    from ropebench.core.rope.backend_fullwidth import apply as fullwidth

    cos, sin = tables(rotary_dim, 13, device="cpu")
    q, k, leaf = (t.cpu() for t in make_qk(2, 3, 13, 16, torch.float32, "qkv"))
    for got, want in zip(fullwidth(q, k, cos, sin, pairing), apply_rope(q, k, cos, sin, pairing)):
        assert torch.equal(got, want)
    assert backends.resolve("auto", torch.device("cpu")).name == "fullwidth"
