"""RoPE long-term decay: the RoFormer bound, the measured scores by distance, and the plot."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from ropebench.core.model import GPT
from ropebench.core.pe import registry
from ropebench.errors import UserError
from ropebench.report.decay import measured_attention_by_distance, plot_decay, rope_decay_bound
from ropebench.run.config import ModelConfig


@pytest.mark.parametrize("d", [4, 64, 128])
def test_bound_is_largest_at_distance_zero(d):
    bound = rope_decay_bound(d, 10000.0, 512)
    assert bound.shape == (513,) and bound.dtype == torch.float64
    # At r = 0, S_j = j, so the mean of |S_j| over j = 1 .. d/2 is (d/2 + 1) / 2; nothing exceeds it.
    assert bound[0].item() == pytest.approx((d / 2 + 1) / 2, rel=1e-12)
    assert bound.argmax().item() == 0
    assert torch.all(bound[1:] < bound[0])


def test_hand_checked_values_for_d4():
    # d = 4, base 10000: theta = (1, 0.01). S_1 = e^{ir}, |S_1| = 1; S_2 = e^{ir} + e^{0.01ir},
    # |S_2| = |1 + e^{-0.99ir}| = 2 |cos(0.495 r)|. Bound = (1 + 2 |cos(0.495 r)|) / 2.
    bound = rope_decay_bound(4, 10000.0, 5)
    assert bound[0].item() == pytest.approx(1.5, abs=1e-12)
    assert bound[1].item() == pytest.approx(1.3799687098362043, abs=1e-12)  # cos(0.495) = 0.8799687...
    assert bound[2].item() == pytest.approx(1.0486898605815875, abs=1e-12)  # cos(0.99) = 0.5486898...
    assert bound[5].item() == pytest.approx(1.2859330260761572, abs=1e-12)  # |cos(2.475)| = 0.7859330...


@pytest.mark.parametrize("d", [64, 128])
def test_bound_decays_on_average(d):
    # Not monotone point by point (it ripples), but the mean over doubling windows [2^k, 2^(k+1)) falls
    # steadily out to 4096 for base 10000.
    bound = rope_decay_bound(d, 10000.0, 4096)
    edges = [0, 1] + [2**k for k in range(1, 13)]
    means = torch.stack([bound[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    assert torch.all(means[1:] < means[:-1]), means
    assert means[-1] < 0.25 * means[0]  # 3.4 vs 16.5 at d=64, 4.9 vs 32.5 at d=128


def test_larger_base_decays_more_slowly():
    near, far = rope_decay_bound(64, 10000.0, 1024), rope_decay_bound(64, 500000.0, 1024)
    assert far[256:].mean() > near[256:].mean()


@pytest.mark.parametrize(
    "args",
    [(63, 10000.0, 8), (0, 10000.0, 8), (64, 0.0, 8), (64, -1.0, 8), (64, 10000.0, -1), (64, 10000.0, 2.5)],
)
def test_bad_arguments(args):
    with pytest.raises(UserError):
        rope_decay_bound(*args)


def tiny_gpt(pe_name="rope", n_layer=2):
    torch.manual_seed(0)
    model_cfg = OmegaConf.structured(ModelConfig(n_layer=n_layer, n_head=2, n_embd=16))
    pe_cfg = OmegaConf.structured(registry()[pe_name].config_cls())
    return GPT(model_cfg, pe_cfg, vocab_size=257, train_seq_len=16)


def test_measured_scores_match_a_direct_computation():
    model = tiny_gpt(n_layer=1)
    tokens = torch.randint(0, 257, (3, 12))
    measured = measured_attention_by_distance(model, tokens)
    assert measured.shape == (12,) and torch.isfinite(measured).all()

    # Independently: the single layer's q and k, rotated by the encoding, scores averaged with plain loops.
    with torch.no_grad():
        block = model.blocks[0]
        x = block.ln_1(model.pe.embed(model.wte(tokens), torch.arange(12)))
        q, k, _ = block.attn.c_attn(x).view(3, 12, 3, 2, 8).permute(2, 0, 3, 1, 4)
        q, k = model.pe.qk(q, k, torch.arange(12))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).double()
    for r in range(12):
        values = [scores[:, :, t, t - r] for t in range(r, 12)]
        assert measured[r].item() == pytest.approx(torch.stack(values).mean().item(), rel=1e-5, abs=1e-6)


def test_measured_scores_with_bias_and_model_state():
    model = tiny_gpt("alibi").train()
    tokens = torch.randint(0, 257, (2, 10))
    plain = measured_attention_by_distance(model, tokens)
    biased = measured_attention_by_distance(model, tokens, include_bias=True)
    assert model.training  # the caller's mode is restored
    # ALiBi adds slope_h * (j - i) = -slope_h * r, averaged over heads.
    slopes = model.pe.slopes.double().mean()
    torch.testing.assert_close(biased - plain, -slopes * torch.arange(10, dtype=torch.float64))
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_plot_writes_png_and_pdf(tmp_path):
    measured = measured_attention_by_distance(tiny_gpt(), torch.randint(0, 257, (1, 16)))
    paths = plot_decay(64, 10000.0, 64, tmp_path / "figs" / "decay", measured=measured)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:4] == b"%PDF"
    assert plot_decay(8, 100.0, 16, tmp_path / "plain.png")[1].name == "plain.pdf"


def test_decay_figure_names_the_run_and_draws_each_curve_on_its_own_axis():
    """Readable: the bound relative to its value at distance 0 (from 1 down), the measured scores in a panel of
    their own below -- never the raw bound and the scores on twin axes."""
    from ropebench.report.decay import decay_figure, rope_decay_bound
    from ropebench.report.plot import FigureOptions

    fig = decay_figure(64, 10000.0, 64, measured=torch.linspace(1, 0, 65), run_name="compare/pe=rope,seed=0")
    top, bottom = fig.axes  # two panels, no twin
    assert "compare/pe=rope,seed=0" in top.get_title() and "d=64, base=10000" in top.get_title()
    (bound,) = top.get_lines()
    expected = rope_decay_bound(64, 10000.0, 64)
    assert bound.get_ydata()[0] == 1.0 and bound.get_ydata() == pytest.approx((expected / expected[0]).numpy())
    assert "÷ its value at distance 0" in top.get_ylabel() and "q·k/√d" in bottom.get_ylabel()
    assert bottom.get_xlabel() == "relative distance (tokens)" and list(bottom.get_lines()[0].get_ydata())[0] == 1.0
    assert fig.axes[0].get_position().y0 > fig.axes[1].get_position().y1 - 1e-9  # stacked, the bound on top
    fig = decay_figure(8, 100.0, 16, opts=FigureOptions(figsize=(4.0, 3.0), title="mine"))
    assert fig.axes[0].get_title() == "mine" and tuple(fig.get_size_inches()) == (4.0, 3.0) and len(fig.axes) == 1


def test_decay_formats_and_one_dpi(tmp_path):
    from PIL import Image

    from ropebench.report.plot import DPI

    (svg,) = plot_decay(8, 100.0, 16, tmp_path / "d.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    png, pdf = plot_decay(8, 100.0, 16, tmp_path / "d.png")  # a PNG brings its PDF
    assert pdf.name == "d.pdf" and Image.open(png).info["dpi"] == pytest.approx((DPI, DPI), abs=0.1)
    with pytest.raises(UserError, match="'.jpg'"):
        plot_decay(8, 100.0, 16, tmp_path / "d.jpg")
    assert not (tmp_path / "d.jpg").exists()


def test_every_built_in_encoding_has_its_own_colour():
    from ropebench.report.plot import PALETTE, colour

    names = sorted(registry())
    assert set(names) <= set(PALETTE)  # ENCODING_ORDER lists every encoding ropebench ships
    assert len({colour(n) for n in names}) == len(names)
