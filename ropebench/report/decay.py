"""RoPE's long-term decay (RoFormer section 3.4.3, Figure 2), in theory and as measured in a trained model.

Theory: with h_j = q_j conj(k_j) per channel pair, the rotated score is Re sum_j h_j e^{i r theta_j} for the
relative distance r, and Abel summation bounds it by (max_j |h_{j+1} - h_j|) * sum_{j=1}^{d/2} |S_j|, where
S_j = sum_{k=0}^{j-1} e^{i r theta_k}. The content-free part, (1/(d/2)) sum_j |S_j|, is the "relative upper
bound" the paper plots against r: it falls as r grows (with ripples).

Measurement: the mean pre-softmax score q.k/sqrt(d) of a trained ropebench GPT at each causal distance.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ropebench.errors import UserError


def rope_decay_bound(head_dim: int, base: float = 10000.0, max_distance: int = 256) -> Tensor:
    """(1/(d/2)) * sum_{j=1}^{d/2} |S_j| for r = 0 .. max_distance, float64, shape (max_distance + 1,).

    S_j = sum_{k=0}^{j-1} e^{i r theta_k}, theta_k = base^(-2k/d). Normalised as in the paper: the sum over
    j is divided by d/2 (the mean of |S_j| over the pairs), not by its value at r = 0. At r = 0 every
    S_j = j, so the bound is its maximum, (d/2 + 1) / 2; each |S_j| <= j, so no distance can exceed it.
    """
    if head_dim <= 0 or head_dim % 2:
        raise UserError(f"head_dim must be a positive even number, got {head_dim}")
    if not (base > 0 and math.isfinite(base)):
        raise UserError(f"base must be a positive number, got {base}")
    if max_distance < 0 or int(max_distance) != max_distance:
        raise UserError(f"max_distance must be a non-negative integer, got {max_distance}")
    theta = float(base) ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(int(max_distance) + 1, dtype=torch.float64)[:, None] * theta[None, :]
    # Partial sums over the pairs, real and imaginary parts separately (float64: r * theta reaches 1e5 rad).
    s_re, s_im = angles.cos().cumsum(dim=1), angles.sin().cumsum(dim=1)
    return torch.hypot(s_re, s_im).mean(dim=1)


@torch.no_grad()
def measured_attention_by_distance(model, tokens: Tensor, include_bias: bool = False) -> Tensor:
    """Mean pre-softmax score q.k/sqrt(d) by causal distance r = i - j, shape (T,), float64.

    Runs ``model`` (a :class:`ropebench.core.model.GPT`) on ``tokens`` (B, T) and averages over layers, heads,
    batch and the T - r query/key pairs at each distance. The queries and keys are taken from each block's
    ``c_attn`` output through a forward hook and passed through the encoding's ``qk`` hook, exactly as the
    attention sees them; one layer's (B, H, T, T) scores exist at a time. ``include_bias`` adds a bias
    encoding's logit bias (T5, ALiBi, ...) to the score; by default it is the q.k term alone.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 1:
        raise UserError(f"tokens must have shape (batch, length), got {tuple(tokens.shape)}")
    B, T = tokens.shape
    device = tokens.device
    pos = torch.arange(T, device=device)
    i, j = torch.tril_indices(T, T, device=device)
    distance = i - j
    counts = torch.bincount(distance, minlength=T).double()
    total = torch.zeros(T, dtype=torch.float64, device=device)
    bias = model.pe.bias(T, device) if include_bias and model.pe.has_bias() else None
    n_layers = 0

    def hook(module, inputs, output):
        nonlocal total, n_layers
        n_head = module_heads[module]
        C = output.shape[-1] // 3
        q, k, _ = output.view(B, T, 3, n_head, C // n_head).permute(2, 0, 3, 1, 4)
        q, k = model.pe.qk(q, k, pos)
        scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(C // n_head)  # (B, H, T, T)
        if bias is not None:
            scores = scores + bias[None]
        summed = scores.sum(dim=(0, 1))[i, j].double() / (B * n_head)  # mean over batch and heads
        total = total.index_add(0, distance, summed)
        n_layers += 1

    module_heads = {block.attn.c_attn: block.attn.n_head for block in model.blocks}
    handles = [m.register_forward_hook(hook) for m in module_heads]
    was_training = model.training
    model.eval()
    try:
        model(tokens)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return (total / (counts * n_layers)).cpu()


def decay_figure(head_dim: int, base: float, max_distance: int, measured: Tensor | None = None,
                 run_name: str | None = None, opts=None):
    """Build (not save) the decay Figure: the bound against distance, relative to its value at distance 0 (so it
    reads as "how much of the attention a distant key can still get", from 1 down); with ``measured`` scores, a
    second panel below on the same distances, each curve on an axis of its own unit (no twin axes).

    Uses matplotlib's Agg canvas directly, so no display is needed and pyplot's global state is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ropebench.report.plot import FigureOptions

    opts = opts or FigureOptions()
    bound = rope_decay_bound(head_dim, base, max_distance)
    panels = 1 if measured is None else 2
    fig = Figure(figsize=opts.figsize or (6.4, 2.6 + 2.0 * panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    distances = range(len(bound))
    axes[0].plot(distances, (bound / bound[0]).numpy(), color="tab:blue", lw=1.2)
    axes[0].set_ylabel("upper bound\n÷ its value at distance 0")
    axes[0].set_ylim(0, 1.05)
    run = f"\nrun {run_name}" if run_name else ""
    axes[0].set_title(opts.title_or(f"RoPE long-term decay (RoFormer §3.4.3), d={head_dim}, base={base:g}{run}"),
                      fontsize=10)
    if measured is not None:
        values = torch.as_tensor(measured, dtype=torch.float64).cpu()[: max_distance + 1]
        axes[1].plot(range(len(values)), values.numpy(), color="tab:orange", lw=1.0)
        axes[1].axhline(0.0, color="0.6", lw=0.8)
        axes[1].set_ylabel("measured mean\npre-softmax q·k/√d")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("relative distance (tokens)")
    return fig


def plot_decay(head_dim: int, base: float, max_distance: int, out_path, measured: Tensor | None = None,
               run_name: str | None = None, opts=None) -> list[Path]:
    """Write the decay figure to ``out_path`` (formats as in ropebench.report.plot); returns the written paths."""
    from ropebench.report.plot import FigureOptions, render

    opts = opts or FigureOptions()
    return render(lambda: decay_figure(head_dim, base, max_distance, measured, run_name, opts), out_path, "decay",
                  opts)


def plot_run_decay(run_dirs: list[Path], out: Path, head_dim, base, max_distance, opts=None):
    """The decay figure (``plot decay``): the formula's curve, and with one rotary run its attention by distance
    measured on validation documents; head_dim / base / max_distance default to the run's, else 128 / 1e4 / 256."""
    if len(run_dirs) > 1:
        raise UserError(f"plot decay takes at most one run directory, got {len(run_dirs)}")
    measured = None
    if run_dirs:
        from ropebench.data import load_corpus
        from ropebench.run.artifacts import load_model
        from ropebench.run.rundir import RunDir

        run = RunDir(run_dirs[0])
        cfg = run.read_config()
        model = load_model(run, cfg)
        rotary = model.pe.decay_params()
        if rotary is None:
            raise UserError(f"plot decay needs a rotary encoding (rope, xpos); {run_dirs[0]} uses pe={cfg.pe.name}")
        head_dim, base = head_dim or rotary[0], base or rotary[1]
        max_distance = max_distance or 16 * int(cfg.train.seq_len)
        val = load_corpus(cfg.data).val
        spans = val.documents(min_len=max_distance + 1)[:8]
        if not spans:
            raise UserError(f"no validation document has {max_distance + 1} tokens; lower --max-distance")
        tokens = torch.stack([torch.from_numpy(val.tokens[s : s + max_distance + 1].astype("int64"))
                              for s, _ in spans])
        measured = measured_attention_by_distance(model, tokens)
    # The run's last two path parts ("compare/pe=rope,seed=0") name it without a machine-specific prefix.
    run_name = "/".join(run_dirs[0].resolve().parts[-2:]) if run_dirs else None
    return plot_decay(head_dim or 128, base or 10000.0, max_distance or 256, out, measured=measured,
                      run_name=run_name, opts=opts)
