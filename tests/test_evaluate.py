"""Evaluation protocols on hand-checkable cases: which targets are scored, with how much context, and how
the negative log-likelihood is averaged."""

import math

import pytest
import torch
from torch import nn

from ropebench.errors import UserError
from ropebench.evaluate import Window, default_lengths, make_windows, merge_rows, parse_lengths, score_windows


def scored_targets(windows, length):
    """Each scored target with the number of tokens of context it saw (independent of make_windows)."""
    out = []
    for w in windows:
        for j in range(length - w.n_score, length):
            out.append((w.start + j + 1, j + 1))  # target index, context = inputs up to and including it
    return out


def test_nonoverlapping_cuts_consecutive_chunks_and_drops_the_remainder():
    # One document of 11 tokens at [0, 11): targets 1..10. L=4: windows at 0 and 4, the last 2 targets unscored.
    windows = make_windows([(0, 11)], 4, "nonoverlapping", 4)
    assert windows == [Window(0, 4, 0), Window(4, 4, 0)]
    assert [t for t, _ in scored_targets(windows, 4)] == list(range(1, 9))


@pytest.mark.parametrize("doc_len,length,stride", [(11, 4, 2), (11, 4, 3), (12, 4, 3), (100, 16, 5), (33, 8, 8)])
def test_sliding_scores_every_target_once_with_at_least_L_minus_S_context(doc_len, length, stride):
    start = 50
    windows = make_windows([(start, start + doc_len)], length, "sliding", stride)
    targets = scored_targets(windows, length)
    assert sorted(t for t, _ in targets) == list(range(start + 1, start + doc_len))  # all, once each
    first = windows[0]
    assert first.start == start and first.n_score == length  # the first window scores all of its tokens
    for target, context in targets:
        if target > start + length:
            assert context >= length - stride


def test_sliding_tail_window_picks_up_the_last_targets():
    # 12 tokens (targets 1..11), L=4, S=3: windows at 0, 3, 6 cover targets 1..10; a window ending at the
    # document's end (start 7) scores only target 11.
    windows = make_windows([(0, 12)], 4, "sliding", 3)
    assert windows[-1] == Window(7, 1, 0)


def test_documents_shorter_than_the_length_are_skipped():
    assert make_windows([(0, 4), (10, 30)], 8, "nonoverlapping", 8) == [Window(10, 8, 1), Window(18, 8, 1)]


class PositionLoss(nn.Module):
    """A stand-in language model whose loss at position t is exactly t (so averages are hand-checkable)."""

    def forward(self, x, y, reduction="none"):
        return None, torch.arange(x.shape[1], dtype=torch.float32).expand(x.shape[0], -1)


def test_nll_is_averaged_per_token_not_per_window():
    # Two windows of L=4: the first scores all 4 targets (loss 0,1,2,3), the second only its last one (3).
    tokens = torch.arange(20).numpy()
    windows = [Window(0, 4, 0), Window(1, 1, 0)]
    total, count, edges, bucket_nll, bucket_n = score_windows(PositionLoss(), tokens, windows, 4, 8,
                                                              torch.device("cpu"), 2)
    assert count == 5
    assert total / count == pytest.approx((0 + 1 + 2 + 3 + 3) / 5)  # per token: 1.8; per window would be 2.25
    assert edges == [0, 2, 4]
    assert bucket_n == [2, 3] and bucket_nll == [1, 8]


def test_default_lengths_are_the_documented_multiples():
    assert default_lengths(64) == [64, 80, 96, 128, 256, 512, 1024]


@pytest.mark.parametrize("text", ["0", "-5", "abc", "12,x", "1.5"])
def test_bad_lengths_are_user_errors(text):
    with pytest.raises(UserError, match="positive integer"):
        parse_lengths(text, 64)


def test_merge_replaces_same_key_and_keeps_others(tmp_path):
    path = tmp_path / "eval.csv"
    cols = ["pe", "eval_len", "protocol", "stride", "rope_scaling", "ppl", "status"]
    row = {"pe": "rope", "protocol": "nonoverlapping", "rope_scaling": "none", "status": "ok"}
    merge_rows(path, [{**row, "eval_len": 64, "stride": 64, "ppl": 1.0},
                      {**row, "eval_len": 128, "stride": 128, "ppl": 2.0}], cols)
    merge_rows(path, [{**row, "eval_len": 128, "stride": 128, "ppl": 3.0}], cols)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("rope,64,") and lines[2].endswith(",3.0,ok")
    assert not list(tmp_path.glob(".*tmp"))
    assert math.isclose(float(lines[2].split(",")[5]), 3.0)
