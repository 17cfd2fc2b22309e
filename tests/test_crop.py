"""The cropped baseline (does the model use the context past its training length?), its standard errors, and
the hold / use lengths -- each checked against a brute-force or hand computation written here."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import tiny_model
from torch import nn

from ropebench.errors import UserError
from ropebench.eval.crop import checked_sample, clustered_se, crop_gain, crop_stride, crop_windows, gain_is_significant
from ropebench.eval.perplexity import PerplexityProbe, make_windows, score_windows
from ropebench.report.context import describe, hold_length, use_length


def scored(windows, length):
    """{target index: context} for every scored target (context: the inputs up to and including it)."""
    out = Counter()
    contexts = {}
    for w in windows:
        for j in range(length - w.n_score, length):
            out[w.start + j + 1] += 1
            contexts[w.start + j + 1] = j + 1
    assert set(out.values()) <= {1}, "a target scored twice"
    return contexts


@pytest.mark.parametrize("protocol", ["nonoverlapping", "sliding"])
@pytest.mark.parametrize("length,train_len,stride", [(16, 16, 2), (20, 16, 2), (48, 16, 2), (64, 16, 4),
                                                     (100, 16, 3), (33, 8, 8), (64, 64, 8), (1024, 64, 8)])
def test_crop_scores_the_same_targets_with_context_cut_to_the_training_length(protocol, length, train_len, stride):
    docs = [(0, 1025), (3000, 3000 + 3 * length + 7)]
    full = make_windows(docs, length, protocol, max(1, length // 2))
    cropped = crop_windows(full, length, train_len, stride)
    full_ctx, crop_ctx = scored(full, length), scored(cropped, train_len)
    assert crop_ctx.keys() == full_ctx.keys()  # the same targets, each once
    for target, context in full_ctx.items():
        if context <= train_len:
            assert crop_ctx[target] == context  # the context it had, unchanged
        else:
            assert train_len - stride + 1 <= crop_ctx[target] <= train_len
    for w in cropped:  # every cropped window lies inside the span of its full window's document
        start, end = docs[w.doc]
        assert start <= w.start and w.start + train_len <= end - 1


def test_at_the_training_length_the_crop_is_the_full_evaluation_itself():
    windows = make_windows([(0, 300), (400, 700)], 16, "nonoverlapping", 16)
    assert crop_windows(windows, 16, 16, 2) == windows


def test_default_stride_and_bad_strides():
    assert crop_stride(64) == 4 and crop_stride(16) == 1 and crop_stride(4) == 1 and crop_stride(64, 16) == 16
    with pytest.raises(UserError, match="crop stride 80 is longer than the training length 64"):
        crop_stride(64, 80)
    with pytest.raises(UserError, match="crop sample must be a positive integer .* got 0"):
        checked_sample(0)


@pytest.mark.parametrize("protocol", ["nonoverlapping", "sliding"])
@pytest.mark.parametrize("length,train_len,stride,every", [(64, 16, 1, 4), (1024, 64, 4, 4), (100, 16, 3, 3),
                                                           (48, 16, 2, 2)])
def test_a_sampled_crop_scores_a_weighted_share_of_the_targets_past_the_training_length(protocol, length,
                                                                                         train_len, stride, every):
    docs = [(0, 2049), (3000, 3000 + 5 * length + 7)]
    full = make_windows(docs, length, protocol, max(1, length // 2))
    everything = crop_windows(full, length, train_len, stride)
    sampled = crop_windows(full, length, train_len, stride, every)
    full_ctx, crop_ctx, all_ctx = scored(full, length), scored(sampled, train_len), scored(everything, train_len)
    near = {t for t, context in full_ctx.items() if context <= train_len}
    assert near <= crop_ctx.keys() <= full_ctx.keys()  # every target within L, then a subset of the rest
    assert all(crop_ctx[t] == all_ctx[t] for t in crop_ctx)  # a sampled target has the context it has unsampled
    weight = {w.start + j + 1: w.weight for w in sampled for j in range(train_len - w.n_score, train_len)}
    assert all(weight[t] == 1 for t in near) and all(weight[t] == every for t in crop_ctx.keys() - near)
    chunks = [w for w in everything if w.start + train_len not in near]  # each chunk's last target is past L
    assert len(crop_ctx.keys() - near) == sum(w.n_score for w in chunks[every // 2 :: every])
    # the weighted sample stands for every target past L, to within one chunk per every-th
    far = len(full_ctx) - len(near)
    assert abs(sum(weight[t] for t in crop_ctx.keys() - near) - far) <= every * stride * (1 + len(chunks) // 50)


def test_crop_gain_pairs_each_cropped_target_with_its_full_score():
    """A hand computation: per document, the weighted differences over the full evaluation's token count."""
    from ropebench.eval.perplexity import Scores

    def scores(targets, nll, doc, weight, doc_n=(3.0, 2.0)):
        s = Scores(0.0, int(sum(doc_n)), [0.0, 0.0], list(doc_n), [], [], [])
        s.targets, s.target_nll, s.target_doc, s.target_weight = map(np.asarray, (targets, nll, doc, weight))
        return s

    full = scores([10, 11, 12, 40, 41], [1.0, 2.0, 3.0, 4.0, 5.0], [0, 0, 0, 1, 1], [1] * 5)
    cropped = scores([41, 11], [5.5, 2.5], [1, 0], [2.0, 1.0])
    gain, se = crop_gain(full, cropped)
    per_doc = [0.5 * 1.0, 0.5 * 2.0]
    assert gain == pytest.approx(sum(per_doc) / 5)
    assert se == pytest.approx(clustered_se(per_doc, [3.0, 2.0]))
    with pytest.raises(RuntimeError, match="scored a target the full evaluation did not"):
        crop_gain(full, scores([13], [1.0], [0], [1.0]))


def test_a_row_cropped_with_other_settings_is_evaluated_again():
    probe = PerplexityProbe(crop=True, crop_stride=0, crop_sample=4)
    row = {"eval_len": "256", "nll_gain": "0.01", "crop_stride": "4", "crop_sample": "4"}
    assert probe.complete(row, 64)
    assert not probe.complete({**row, "crop_stride": "8"}, 64)  # the stride of an older default
    assert not probe.complete({**row, "crop_sample": ""}, 64)  # a row that cropped every target
    assert not probe.complete({**row, "nll_gain": ""}, 64) and probe.complete({**row, "nll_gain": ""}, 256)


def test_clustered_standard_error_is_the_ratio_estimator():
    sums, counts = [3.0, 5.0, 10.0, 2.0], [2.0, 4.0, 5.0, 1.0]
    mean = sum(sums) / sum(counts)
    want = math.sqrt(4 / 3 * sum((s - mean * n) ** 2 for s, n in zip(sums, counts))) / sum(counts)
    assert clustered_se(sums, counts) == pytest.approx(want)
    # equal counts: the plain standard error of the per-document means
    means = [0.5, 1.5, 0.25, 1.0]
    assert clustered_se([m * 8 for m in means], [8] * 4) == pytest.approx(np.std(means, ddof=1) / 2)
    assert clustered_se([1.0], [3.0]) == 0.0
    assert gain_is_significant(0.05, 0.02) and not gain_is_significant(0.03, 0.02)
    assert not gain_is_significant(-0.5, 0.01) and not gain_is_significant("", 0.1)


class CopyModel(nn.Module):
    """A language model that copies from ``period`` tokens back: p = 0.9 on the token there when its window holds
    it, else uniform over the vocabulary (so only context of at least ``period`` tokens helps)."""

    def __init__(self, period: int, vocab: int = 257):
        super().__init__()
        self.period, self.vocab = period, vocab

    def forward(self, x, y, reduction="none"):
        T = x.shape[1]
        source = torch.full_like(y, -1)
        back = self.period - 1  # target y[t] = x[t + 1] repeats x[t + 1 - period]
        if T > back:
            source[:, back:] = x[:, : T - back]
        uniform = torch.full(y.shape, math.log(self.vocab))
        return None, torch.where(source == y, torch.tensor(-math.log(0.9)), uniform)


def _gain(model, tokens, docs, length, train_len, stride=2, every=1):
    full = make_windows(docs, length, "nonoverlapping", length)
    cpu = torch.device("cpu")
    f = score_windows(model, tokens, full, length, 8, cpu, 4, len(docs), keep_targets=True)
    cropped = crop_windows(full, length, train_len, stride, every)
    c = score_windows(model, tokens, cropped, train_len, 8, cpu, 4, len(docs), keep_targets=True)
    gain, se = crop_gain(f, c)
    if every == 1:  # every target cropped: the gain is the difference of the two means, computed apart
        assert c.count == f.count
        assert gain == pytest.approx(c.nll - f.nll, abs=1e-12)
        assert se == pytest.approx(clustered_se([a - b for a, b in zip(c.doc_nll, f.doc_nll)], f.doc_n), abs=1e-12)
    return gain, se


def test_a_model_that_copies_from_far_back_gains_from_the_longer_context():
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, 24)
    tokens = np.concatenate([np.tile(rng.integers(0, 256, 24), 12) for _ in range(4)] + [np.tile(block, 12)])
    docs = [(i * 288, (i + 1) * 288) for i in range(5)]
    gain, se = _gain(CopyModel(24), tokens, docs, 64, 16)  # trained at 16: the crop never sees 24 back
    assert gain > 2.0 and gain_is_significant(gain, se)
    gain, se = _gain(CopyModel(24), tokens, docs, 64, 32)  # trained at 32: the crop holds the copy already
    assert gain == pytest.approx(0.0, abs=0.05)
    # sampled one chunk in 4: the same gain, estimated (every target past 24 gains log(257) - log(1/0.9))
    exact, _ = _gain(CopyModel(24), tokens, docs, 64, 16)
    gain, se = _gain(CopyModel(24), tokens, docs, 64, 16, stride=1, every=4)
    assert gain == pytest.approx(exact, rel=0.1) and gain_is_significant(gain, se)


def test_a_model_whose_attention_is_forced_local_gains_nothing():
    """ALiBi with slopes so steep that a key a few tokens back gets no attention: the context past the training
    length cannot matter, and the gain is zero to rounding."""
    model = tiny_model("alibi", n_layer=2, train_seq_len=16)
    with torch.no_grad():
        model.pe.slopes.mul_(200.0)
    tokens = np.random.default_rng(1).integers(0, 256, 1200).astype(np.uint16)
    docs = [(0, 400), (400, 800), (800, 1200)]
    for every in (1, 4):
        gain, se = _gain(model, tokens, docs, 128, 16, every=every)
        assert abs(gain) < 1e-6 and not gain_is_significant(gain, se)


def _rows(ppl, gains=None, train_len=64):
    out = []
    for i, (length, value) in enumerate(sorted(ppl.items())):
        row = {"eval_len": length, "ppl": value, "status": "ok", "train_seq_len": train_len}
        if gains:
            row["nll_gain"], row["gain_se"] = gains[i]
        out.append(row)
    return out


def test_hold_length_is_where_perplexity_first_leaves_five_percent_of_its_value_at_L():
    assert hold_length(_rows({64: 5.0, 80: 5.2, 96: 5.24, 128: 5.3, 256: 4.0})) == 96
    assert hold_length(_rows({64: 5.0, 80: 4.0, 128: 4.5, 256: 5.25})) == 256  # lower counts as holding
    assert hold_length(_rows({64: 5.0, 80: 6.0, 128: 5.0})) == 64  # a later return does not count
    rows = _rows({64: 5.0, 80: 5.0, 128: 5.0})
    rows[1]["status"] = "not_applicable: stops at 64"
    assert hold_length(rows) == 64 and hold_length(_rows({80: 5.0})) is None


def test_use_length_is_the_longest_length_with_a_significant_gain():
    gains = [(0.0, 0.0), (0.05, 0.01), (0.01, 0.01), (0.2, 0.05), (0.3, 0.5)]
    assert use_length(_rows({64: 5, 80: 5, 96: 5, 128: 5, 256: 5}, gains)) == 128
    none = [(0.0, 0.0), (0.001, 0.01), (-0.2, 0.01)]
    assert use_length(_rows({64: 5, 80: 5, 96: 5}, none)) == 64  # nothing past L is used
    assert use_length(_rows({64: 5, 80: 5})) is None  # no crop measured
    assert describe([128, 128, 128]) == "128" and describe([96, 128, 128]) == "128 (96, 128, 128)"
    assert describe([None, None]) == "—"
