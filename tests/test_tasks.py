"""The task suite's data: every generator's answer against an independent check (Python's own sorted, int
addition, sum, dict lookup), the token layout and what an instance's length means, the train/test split
(disjoint, and checked on the real training stream), reproducibility, and the answer-only loss."""

import random

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model
from omegaconf import OmegaConf

from ropebench.data import tasks
from ropebench.data.task_corpus import TaskSplit, instance_rows
from ropebench.errors import UserError
from ropebench.eval.task import TaskProbe, _bucket_rng, default_buckets, parse_buckets

TEXT = {tasks.SYMBOLS.index(s): s for s in tasks.SYMBOLS}


def parts(instance):
    """(prompt symbols, answer symbols) read back from the tokens: BOS first, '=' ends the prompt, EOS last."""
    symbols = [TEXT[t] for t in instance.tokens]
    assert symbols[0] == "^" and symbols[-1] == "." and symbols.count("=") == 1
    marker = symbols.index("=")
    return symbols[1:marker], symbols[marker + 1 : -1]


def check_copy(prompt, answer, n):
    assert len(prompt) == n and answer == prompt


def check_reverse(prompt, answer, n):
    assert len(prompt) == n and answer == list(reversed(prompt))


def check_sort(prompt, answer, n):
    assert len(prompt) == n and answer == sorted(prompt, key=int)


def check_addition(prompt, answer, n):
    # Interleaved operands, least significant digit first; the sum has n + 1 digits, also reversed.
    assert len(prompt) == 2 * n and len(answer) == n + 1
    a, b = int("".join(prompt[0::2])[::-1]), int("".join(prompt[1::2])[::-1])
    assert int("".join(answer)[::-1]) == a + b


def check_parity(prompt, answer, n):
    bits = [int(s) for s in prompt]
    assert len(bits) == n and set(bits) <= {0, 1}
    assert [int(s) for s in answer] == [sum(bits[: i + 1]) % 2 for i in range(n)]
    assert int(answer[-1]) == sum(bits) % 2


def check_mqar(prompt, answer, n):
    keys, values = prompt[0::2], prompt[1::2]
    assert len(keys) == n == len(set(keys)) and all(k.startswith("k") for k in keys)
    table = dict(zip(keys, values))
    asked, given = answer[0::2], answer[1::2]
    assert sorted(asked) == sorted(keys)  # every key queried once
    assert given == [table[k] for k in asked]


CHECKS = {"copy": check_copy, "reverse": check_reverse, "sort": check_sort, "addition": check_addition,
          "parity": check_parity, "mqar": check_mqar}


def test_every_task_has_an_independent_check():
    assert set(CHECKS) == set(tasks.TASKS)


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_generated_answers_are_right_and_lengths_mean_items(name):
    rng = random.Random(0)
    task = tasks.TASKS[name]
    for n in (1, 2, 3, 7, 20):
        for _ in range(40):
            instance = task.make(n, rng)
            assert instance.length == n and len(instance.tokens) == task.n_tokens(n)
            assert len(instance.answer) == len(instance.tokens)
            prompt, answer = parts(instance)
            CHECKS[name](prompt, answer, n)
            # The answer tokens: everything after '=' (EOS included) -- but MQAR's query keys, which are given.
            marker = instance.tokens.index(tasks.ANS)
            expected = [i > marker and not (name == "mqar" and (i - marker) % 2 == 1 and i < len(instance.tokens) - 1)
                        for i in range(len(instance.tokens))]
            assert list(instance.answer) == expected


def test_training_window_is_the_longest_training_instance_less_one():
    for name, task in tasks.TASKS.items():
        assert tasks.window(name, 5) == task.n_tokens(5) - 1
    cfg = OmegaConf.create({"task": "copy", "task_len": 0})
    assert tasks.train_len(cfg) == tasks.TASKS["copy"].default_len
    tasks.check_task_config(cfg, tasks.window("copy", tasks.train_len(cfg)))
    with pytest.raises(UserError, match="cannot hold the longest training instance"):
        tasks.check_task_config(cfg, tasks.window("copy", tasks.train_len(cfg)) - 1)
    with pytest.raises(UserError, match="unknown data.task 'copi'"):
        tasks.check_task_config(OmegaConf.create({"task": "copi", "task_len": 0}), 100)
    with pytest.raises(UserError, match="above what task mqar can express"):
        tasks.check_task_config(OmegaConf.create({"task": "mqar", "task_len": tasks.N_KEYS + 1}), 10_000)


def _instances_of(x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, ...]]:
    """The instances of a training batch read back: its inputs up to the padding, then the closing EOS."""
    out = []
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        n = sum(1 for t in row_x if t != tasks.PAD)  # PAD never occurs inside an instance
        assert row_y[n - 1] == tasks.EOS and all(t == tasks.PAD for t in row_x[n:])
        out.append((*row_x[:n], tasks.EOS))
    return out


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_no_test_instance_is_ever_in_the_training_stream(name):
    length = tasks.TASKS[name].default_len
    split = TaskSplit(name, length, test=False)
    seen, g = set(), torch.Generator().manual_seed(0)
    for _ in range(40):
        x, y = split.batch(64, tasks.window(name, length), g)
        seen.update(_instances_of(x, y))
    trained = tasks.lengths_on_side(name, range(1, length + 1), test=False)
    assert {len(t) for t in seen} == {tasks.TASKS[name].n_tokens(n) for n in trained}  # U(1, L): every length
    assert not any(tasks.is_test(name, t) for t in seen)
    probe = TaskProbe(name, length, default_buckets(length), trials=50)
    test_set = set()
    for lo, hi in default_buckets(length)[:length]:  # the test buckets inside the training range
        on_side = tasks.lengths_on_side(name, range(lo, hi + 1), test=True)
        if on_side:
            test_set.update(i.tokens for i in tasks.sample(name, on_side, 50, _bucket_rng(name, lo, hi), test=True))
    assert test_set and all(tasks.is_test(name, t) for t in test_set)
    assert not test_set & seen
    assert probe.lengths() == list(range(1, 4 * length + 1))


def test_test_buckets_hold_exactly_their_lengths_and_are_the_same_every_time():
    for lo, hi in ((1, 1), (5, 9), (17, 24)):
        lengths = tasks.lengths_on_side("copy", range(lo, hi + 1), test=True)
        drawn = tasks.sample("copy", lengths, 300, _bucket_rng("copy", lo, hi), test=True)
        assert {i.length for i in drawn} == set(range(lo, hi + 1))
        again = tasks.sample("copy", lengths, 300, _bucket_rng("copy", lo, hi), test=True)
        assert drawn == again


def test_a_side_without_instances_at_a_length_is_never_drawn():
    # Parity of n bits has 2^n instances: the short lengths may hold no test instance at all.
    empty = [n for n in range(1, 6) for side in (True, False) if n not in tasks.lengths_on_side("parity", [n], side)]
    for n in range(1, 6):
        rng = random.Random(1)
        found = {tasks.make_parity(n, rng).tokens for _ in range(2000)}
        assert len(found) == 2**n
        for side in (True, False):
            holds = any(tasks.is_test("parity", t) == side for t in found)
            assert holds == (n in tasks.lengths_on_side("parity", [n], side)), (n, side, empty)


def test_training_batches_are_reproducible_per_seed():
    split = TaskSplit("mqar", 6, test=False)
    a = split.batch(16, tasks.window("mqar", 6), torch.Generator().manual_seed(3))
    b = split.batch(16, tasks.window("mqar", 6), torch.Generator().manual_seed(3))
    c = split.batch(16, tasks.window("mqar", 6), torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_the_loss_is_on_the_answer_tokens_only():
    rng = random.Random(2)
    instances = [tasks.make_mqar(n, rng) for n in (1, 3, 5)] + [tasks.make_addition(4, rng)]
    x, y = instance_rows(instances)
    model = tiny_model("rope", n_embd=32, n_head=2)
    with torch.no_grad():
        logits, loss = model(x, y)
        per_token = model(x, y, reduction="none")[1]
    # An independent answer-only loss: the next-token cross-entropy at exactly the answer tokens.
    terms = []
    for row, instance in enumerate(instances):
        for t in range(len(instance.tokens) - 1):
            if instance.answer[t + 1]:
                terms.append(-F.log_softmax(logits[row, t], -1)[instance.tokens[t + 1]])
            else:  # a prompt token's target (or padding) contributes nothing, whatever it is
                assert y[row, t] == tasks.IGNORE and per_token[row, t] == 0
    assert len(terms) == int((y != tasks.IGNORE).sum())
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


@pytest.mark.parametrize("text", ["0", "-3", "5-2", "abc", "3-", "1-6,0-4", "2.5"])
def test_bad_length_buckets_are_user_errors(text):
    with pytest.raises(UserError, match="length bucket"):
        parse_buckets(text)


def test_length_buckets_parse_as_items():
    assert parse_buckets("13-24,1-6,7,7") == [(1, 6), (7, 7), (13, 24)]
    assert parse_buckets(None) is None
    assert default_buckets(3) == [(n, n) for n in range(1, 13)]
