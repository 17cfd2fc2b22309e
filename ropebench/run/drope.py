"""DroPE (Gelberg et al. 2025, arXiv 2512.12167): train with RoPE, drop it from every layer for the last part of
training (``train.drop_rope_at``), then evaluate longer inputs with the logits scaled by beta = 1 + c ln(s),
s = evaluation length / training length.

c is fitted once, after training, as the paper does: the value on a grid that gives the lowest loss on
held-out (validation) text at one length, FIT_MULTIPLE x the training length (the longest multiple the
validation data holds). The fit is recorded in final.json (``logit_scale``) and evaluation applies it by default.
"""

from __future__ import annotations

import math

import torch

from ropebench.errors import UserError

FIT_MULTIPLES = (4, 2)  # the fit length, as a multiple of the training length: the first the data holds
C_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0, 0.05, ..., 1 (the paper's from-scratch c: 0.412)
FIT_ROWS = 32  # validation windows scored per value of c


def drop_step(t) -> int | None:
    """The first step trained without RoPE, or None when DroPE is off."""
    fraction = t.get("drop_rope_at")
    return None if fraction is None else int(round(fraction * t.steps))


@torch.no_grad()
def fit_logit_scale(model, val_split, train_len: int, device, amp, log=print) -> dict:
    """The DroPE logit scale with c fitted on ``val_split``: {"type": "beta", "c", "fit_len", "fit_nll"}."""
    x, y = (t.to(device) for t in _fit_windows(val_split, train_len))
    length = x.shape[1]
    was_training = model.training
    model.eval()
    losses = {}
    try:
        for c in C_GRID:
            model.set_logit_scale({"type": "beta", "c": c})
            with amp:
                losses[c] = model(x, y)[1].item()
    finally:
        model.set_logit_scale(None)
        model.train(was_training)
    finite = {c: loss for c, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise UserError("DroPE's logit-scale fit found no finite validation loss; the model diverged")
    best = min(finite, key=finite.get)
    log(f"DroPE: logit scale 1 + c ln(s) fitted at length {length}: c = {best:g} "
        f"(validation loss {finite[best]:.4f}, {finite[0.0]:.4f} with c = 0)")
    return {"type": "beta", "c": best, "fit_len": length, "fit_nll": finite[best]}


def _fit_windows(val_split, train_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FIT_ROWS validation windows (inputs, targets) of the longest fit length the split holds, the same ones
    every time."""
    for multiple in FIT_MULTIPLES:
        try:
            return val_split.batch(FIT_ROWS, multiple * train_len, torch.Generator().manual_seed(4321))
        except UserError:  # the validation text is shorter than this length
            continue
    raise UserError(f"DroPE fits its logit scale on validation text of {FIT_MULTIPLES[-1]}x the training length "
                    f"({FIT_MULTIPLES[-1] * train_len} tokens); the validation data is shorter: raise "
                    "data.val_fraction")
