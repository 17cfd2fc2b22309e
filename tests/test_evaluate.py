"""Evaluation protocols on hand-checkable cases: which targets are scored, with how much context, and how
the negative log-likelihood is averaged."""

import csv
import math
from collections import Counter

import pytest
import torch
from torch import nn

from ropebench.errors import UserError
from ropebench.eval.lengths import default_lengths, parse_lengths
from ropebench.eval.perplexity import EVAL_TABLE, Window, make_windows, score_windows
from ropebench.run.rundir import RunDir


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scored_targets(windows, length):
    """Each scored target with the number of tokens of context it saw (independent of make_windows)."""
    out = []
    for w in windows:
        for j in range(length - w.n_score, length):
            out.append((w.start + j + 1, j + 1))  # target index, context = inputs up to and including it
    return out


def test_nonoverlapping_cuts_consecutive_chunks_and_a_tail_window_scores_the_remainder():
    # One document of 11 tokens at [0, 11): targets 1..10. L=4: windows at 0 and 4 score targets 1..8; a last
    # window ending at the document's end (inputs 6..9) scores only targets 9 and 10, with 3 and 4 tokens of context.
    windows = make_windows([(0, 11)], 4, "nonoverlapping", 4)
    assert windows == [Window(0, 4, 0), Window(4, 4, 0), Window(6, 2, 0)]
    targets = scored_targets(windows, 4)
    assert [t for t, _ in targets] == list(range(1, 11))
    assert targets[-2:] == [(9, 3), (10, 4)]
    # When L divides the targets there is no tail window.
    assert make_windows([(0, 13)], 4, "nonoverlapping", 4) == [Window(0, 4, 0), Window(4, 4, 0), Window(8, 4, 0)]


@pytest.mark.parametrize("protocol", ["nonoverlapping", "sliding"])
@pytest.mark.parametrize("length", [1, 3, 16, 64, 80, 96, 100, 128, 1000, 1024])
def test_every_target_of_every_region_is_scored_exactly_once(protocol, length):
    region = 1024
    docs = [(0, region + 1), (5000, 5000 + region + 1), (9000, 9000 + region + 1)]
    windows = make_windows(docs, length, protocol, max(1, length // 2))
    counts = Counter(t for t, _ in scored_targets(windows, length))
    expected = [t for start, end in docs for t in range(start + 1, end)]
    assert sorted(counts) == expected and set(counts.values()) == {1}
    for w in windows:  # every window lies inside its own document
        start, end = docs[w.doc]
        assert start <= w.start and w.start + length <= end - 1 and 1 <= w.n_score <= length


def test_the_same_tokens_at_every_length_up_to_the_region():
    # The case that used to drop tails: 64 regions of 1024 targets, 65,536 tokens at 80 and 96 as at 64 and 128.
    docs = [(i * 2000, i * 2000 + 1025) for i in range(64)]
    tokens = torch.zeros(64 * 2000, dtype=torch.int64).numpy()
    for length in (64, 80, 96, 100, 128, 1024):
        windows = make_windows(docs, length, "nonoverlapping", length)
        scores = score_windows(PositionLoss(), tokens, windows, length, 64, torch.device("cpu"), 4)
        assert scores.count == 65_536, length


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
    # (10, 30) has targets 11..29: two full windows, then a tail window (inputs 21..28) for targets 27..29.
    assert make_windows([(0, 4), (10, 30)], 8, "nonoverlapping", 8) == [Window(10, 8, 1), Window(18, 8, 1),
                                                                       Window(21, 3, 1)]


class PositionLoss(nn.Module):
    """A stand-in language model whose loss at position t is exactly t (so averages are hand-checkable)."""

    def forward(self, x, y, reduction="none"):
        return None, torch.arange(x.shape[1], dtype=torch.float32).expand(x.shape[0], -1)


def test_nll_is_averaged_per_token_not_per_window():
    # Two windows of L=4: the first scores all 4 targets (loss 0,1,2,3), the second only its last one (3).
    tokens = torch.arange(20).numpy()
    windows = [Window(0, 4, 0), Window(1, 1, 0)]
    s = score_windows(PositionLoss(), tokens, windows, 4, 8, torch.device("cpu"), 2)
    assert s.count == 5
    assert s.nll == pytest.approx((0 + 1 + 2 + 3 + 3) / 5)  # per token: 1.8; per window would be 2.25
    assert s.edges == [0, 2, 4]
    assert s.bucket_n == [2, 3] and s.bucket_nll == [1, 8]
    assert s.doc_nll == [9] and s.doc_n == [5]


def test_default_lengths_are_the_documented_multiples():
    assert default_lengths(64) == [64, 80, 96, 128, 256, 512, 1024]


@pytest.mark.parametrize("text", ["0", "-5", "abc", "12,x", "1.5", "²", "64,٣", "+5", "64,,128", "1e3"])
def test_bad_lengths_are_user_errors(text):
    with pytest.raises(UserError, match="positive integer"):
        parse_lengths(text, 64)


def test_merge_replaces_same_key_and_keeps_others(tmp_path):
    run, t = RunDir(tmp_path), EVAL_TABLE
    cols = ["pe", "eval_len", "split", "protocol", "stride", "rope_scaling", "logit_scale", "ppl", "status"]
    row = {"pe": "rope", "split": "test", "protocol": "nonoverlapping", "rope_scaling": "none", "logit_scale": "none",
           "status": "ok"}
    # Out of order on purpose: rows are sorted by length as numbers (128 after 64, not before it as text).
    run.merge_rows(t.name, [{**row, "eval_len": 128, "stride": 128, "ppl": 2.0},
                            {**row, "eval_len": 64, "stride": 64, "ppl": 1.0}], cols, t.key, t.sort_key)
    run.merge_rows(t.name, [{**row, "eval_len": 128, "stride": 128, "ppl": 3.0}], cols, t.key, t.sort_key)
    lines = (tmp_path / "eval_length.csv").read_text().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("rope,64,") and lines[2].endswith(",3.0,ok")
    assert not list(tmp_path.glob(".*tmp"))
    assert math.isclose(float(lines[2].split(",")[cols.index("ppl")]), 3.0)


def test_sort_key_puts_a_damaged_cell_last_instead_of_raising():
    rows = [{"eval_len": "abc", "rope_scaling": "none"}, {"eval_len": "128", "rope_scaling": "none"},
            {"eval_len": 64, "rope_scaling": "none"}, {"eval_len": "16", "rope_scaling": "linear"}]
    assert [r["eval_len"] for r in sorted(rows, key=EVAL_TABLE.sort_key)] == ["16", 64, "128", "abc"]


@pytest.fixture(scope="module")
def rope_run(tiny_overrides, tmp_path_factory):
    from typer.testing import CliRunner

    from ropebench.cli.app import app

    run_dir = tmp_path_factory.mktemp("runs") / "rope"
    result = CliRunner().invoke(app, ["train", *tiny_overrides, "pe=rope", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    return run_dir


def eval_cli(run_dir, *args) -> list[dict]:
    from typer.testing import CliRunner

    from ropebench.cli.app import app

    result = CliRunner().invoke(app, ["eval-length", str(run_dir), "--lengths", "16,20,24,25,32,48", *args])
    assert result.exit_code == 0, result.output
    return read_rows(run_dir / "eval_length.csv")


def test_end_to_end_every_length_scores_the_same_tokens(rope_run):
    rows = eval_cli(rope_run)
    # train.seq_len=16: regions of 16 x 16 = 256 targets; eval.max_tokens=512 -> two whole regions.
    assert [int(r["eval_len"]) for r in rows] == [16, 20, 24, 25, 32, 48]
    assert {r["n_tokens"] for r in rows} == {"512"} and {r["n_documents"] for r in rows} == {"2"}
    assert all(r["rope_scaling"] == "none" and r["rope_factor"] == r["rope_scale"] == "" for r in rows)


def test_end_to_end_dynamic_without_factor_equals_ntk(rope_run):
    by_type = {}
    for rope_type in ("none", "dynamic", "ntk"):
        rows = eval_cli(rope_run, "--rope-scaling", rope_type)
        by_type[rope_type] = {int(r["eval_len"]): r for r in rows if r["rope_scaling"] == rope_type}
    for length, dyn in by_type["dynamic"].items():
        ntk, s = by_type["ntk"][length], max(1.0, length / 16)
        assert dyn["status"] == ntk["status"] == "ok"
        assert dyn["ppl"] == ntk["ppl"]  # the same frequencies, the same computation: equal to the last digit
        assert (dyn["rope_factor"], dyn["rope_scale"]) == ("1", f"{s:g}")
        assert (ntk["rope_factor"], ntk["rope_scale"]) == (f"{s:g}", f"{s:g}")
    assert by_type["dynamic"][48]["ppl"] != by_type["none"][48]["ppl"]  # the scaling did change something
    assert by_type["dynamic"][16]["ppl"] == by_type["none"][16]["ppl"]  # and nothing at the training length


def test_rows_written_before_the_test_split_are_validation_rows(tmp_path):
    """An old eval_length.csv (no split column) keeps its rows, read as validation, when new rows merge in."""
    run, t = RunDir(tmp_path), EVAL_TABLE
    (tmp_path / "eval_length.csv").write_text("pe,eval_len,protocol,stride,rope_scaling,ppl,status\n"
                                              "rope,64,nonoverlapping,64,none,5.0,ok\n")
    new = {"pe": "rope", "eval_len": 64, "split": "test", "protocol": "nonoverlapping", "stride": 64,
           "rope_scaling": "none", "ppl": 6.0, "status": "ok"}
    run.merge_rows(t.name, [new], t.columns, t.key, t.sort_key, fill=t.defaults)
    rows = read_rows(tmp_path / "eval_length.csv")
    assert [(r["split"], r["ppl"]) for r in rows] == [("test", "6.0"), ("val", "5.0")]
