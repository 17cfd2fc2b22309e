"""Does the model use the context beyond its training length? The cropped baseline, and the spread of a mean.

Perplexity that stays flat past the training length L can mean that the model uses the longer context, or that
it ignores everything older than L (Gelberg et al. 2025, DroPE, §4; Kuratov et al. 2024, BABILong). To tell
them apart, every token scored at an evaluation length is scored a second time with its context *cropped*:

* a token whose context in the full evaluation is at most L tokens keeps exactly that context (so at lengths up
  to L the cropped score is the full score, token for token);
* a token with more context is scored inside a window of L tokens that ends at it, give or take the crop stride
  S: the targets past the first L of a window are cut into chunks of S, and a chunk is scored at the end of a
  window of L tokens, so every cropped token sees between L - S + 1 and L tokens (with the default S = L / 16,
  at least 15/16 of the training length: within 6.25% of it).

Cutting every context to within a few percent of L costs about L / S forward tokens per scored token, whatever
the scheme (the hidden states of a window depend on where it starts, so no two windows share work). To keep the
cost within a few times the plain evaluation's, the crop scores a systematic sample of those chunks: one in every
``every`` (default 4), each weighted by ``every`` (a Horvitz-Thompson estimate); the targets whose context is
within L are always scored. Past L the crop then costs about (L / S) / every = 4 forward tokens of length L per
target, against one token of length T >= L for the plain evaluation. ``every`` = 1 scores every target.

The cropped windows never hold a position past L - 1, so every encoding is scored inside its training range.
``nll_gain`` = cropped NLL - full NLL (nats per token), the mean over the same targets (the full NLL of a sampled
target is its own, from the plain evaluation): above 0 the extra context helps, 0 means the model scores as if it
saw only the last L tokens, below 0 the extra context hurts. ``nll_crop`` = full NLL + ``nll_gain``.

Uncertainty: tokens of one document are not independent, so standard errors are taken over documents (the
evaluation regions), as for a ratio of sums (the cluster-robust estimator): for per-document sums x_d over n_d
tokens and the mean m = sum x_d / sum n_d, SE^2 = D / (D - 1) * sum (x_d - m n_d)^2 / (sum n_d)^2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ropebench.errors import UserError

#: the default crop stride is the training length divided by this (cropped contexts >= 15/16 of it)
STRIDE_DIVISOR = 16
#: by default the crop scores one chunk of targets past the training length in this many
SAMPLE_EVERY = 4
#: a gain is "significantly above zero" when it exceeds this many standard errors (one-sided, about 97.5%)
SIGNIFICANT_Z = 2.0


def crop_stride(train_len: int, stride: int = 0) -> int:
    """The crop stride: ``stride`` when given, else train_len / STRIDE_DIVISOR (at least 1)."""
    if stride < 0:
        raise UserError(f"crop stride must be a positive integer (0: the training length / {STRIDE_DIVISOR}), "
                        f"got {stride}")
    if stride > train_len:
        raise UserError(f"crop stride {stride} is longer than the training length {train_len}; use at most that")
    return stride or max(1, train_len // STRIDE_DIVISOR)


def checked_sample(every: int) -> int:
    """The crop's sampling: one chunk in ``every`` (1: every target)."""
    if every < 1:
        raise UserError(f"crop sample must be a positive integer (1 scores every target, {SAMPLE_EVERY} one chunk "
                        f"in {SAMPLE_EVERY}), got {every}")
    return every


def crop_windows(windows: Sequence, length: int, train_len: int, stride: int, every: int = 1) -> list:
    """The cropped counterpart of ``windows`` (full windows of ``length`` inputs, each scoring its last
    ``n_score`` targets): windows of ``train_len`` inputs, each with its context cut to at most ``train_len``
    tokens as the module docstring defines. With ``every`` = 1 they score every one of those targets exactly
    once; with more, the targets whose context is within ``train_len`` and one chunk of ``stride`` targets in
    ``every`` of the rest, weighted by ``every``. Windows are returned as the same type (``start``,
    ``n_score``, ``doc``, ``weight``)."""
    if length < train_len:
        raise ValueError(f"the crop needs windows of at least the training length ({length} < {train_len})")
    out, chunk = [], 0
    for w in windows:
        first = length - w.n_score  # window position of the first scored target
        if first < train_len:  # targets whose full context is within train_len: the same context, unchanged
            out.append(type(w)(w.start, train_len - first, w.doc, 1.0))
        a = max(train_len, first)
        while a < length:  # the rest: chunks of `stride` targets, each at the end of a window of train_len
            b = min(a + stride, length)
            # a centred systematic sample: the middle chunk of every `every` consecutive ones (counted across windows)
            if chunk % every == every // 2:
                out.append(type(w)(w.start + b - train_len, b - a, w.doc, float(every)))
            chunk, a = chunk + 1, b
    return out


def crop_gain(full, cropped) -> tuple[float, float]:
    """``nll_gain`` and its standard error from two ``Scores`` that kept their targets: the weighted sum, per
    document, of each cropped target's NLL minus the full evaluation's NLL of the same target, over the full
    evaluation's token count (clustered over documents)."""
    order = np.argsort(full.targets, kind="stable")
    at = np.searchsorted(full.targets[order], cropped.targets)
    at = np.minimum(at, len(order) - 1)
    if len(order) == 0 or not np.array_equal(full.targets[order][at], cropped.targets):
        raise RuntimeError("the cropped scoring scored a target the full evaluation did not")
    diff = (cropped.target_nll - full.target_nll[order][at]) * cropped.target_weight
    doc_gain = np.bincount(cropped.target_doc, weights=diff, minlength=len(full.doc_n))
    return float(doc_gain.sum() / full.count), clustered_se(doc_gain.tolist(), full.doc_n)


def clustered_se(sums: Sequence[float], counts: Sequence[float]) -> float:
    """Standard error of sum(sums) / sum(counts) with each (sum, count) one cluster (a document); 0 for one."""
    pairs = [(s, n) for s, n in zip(sums, counts) if n > 0]
    if len(pairs) < 2:
        return 0.0
    total = sum(n for _, n in pairs)
    mean = sum(s for s, _ in pairs) / total
    spread = sum((s - mean * n) ** 2 for s, n in pairs)
    return math.sqrt(len(pairs) / (len(pairs) - 1) * spread) / total


def gain_is_significant(gain, se) -> bool:
    """Whether a gain is above zero by more than SIGNIFICANT_Z standard errors (False when either is missing)."""
    try:
        gain, se = float(gain), float(se)
    except (TypeError, ValueError):
        return False
    return math.isfinite(gain) and math.isfinite(se) and gain > SIGNIFICANT_Z * se and gain > 0
