"""The retrieval probes' trials and scores: every task's trials are deterministic per seed, hold their answers at the
recorded offsets (an interpreter of the assignment lines, written here, says what the answer must be), put the
needle at the exact depth, and have disjoint candidates; likelihood and greedy scores equal a hand computation with
plain model calls; the passkey task scores exactly as the passkey scorer did before it became one."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ropebench.cli.app import app
from ropebench.data.passkey import N_DIGITS, cell_generator, sample_batch
from ropebench.data.probes import TASKS, Encoder, TooShort
from ropebench.eval import passkey as pk
from ropebench.eval.probes import greedy_exact, rank_answers
from ropebench.eval.runner import Session

runner = CliRunner()
BYTES = Encoder(lambda text: list(text.encode()))
ASSIGNMENT = re.compile(rb"\n([a-z]{3}) = ([a-z0-9]+)\n")


def text(tokens) -> bytes:
    return bytes(tokens)


def expected_answers(trial) -> list[bytes]:
    """What the slots must answer, from the context and the questions alone: for `\nkey = `, the key's values in
    the order it was assigned them; for `\nassert V == ... == `, every variable holding V, in assignment order."""
    context = text(trial.prefix)
    values: dict[bytes, list[bytes]] = {}
    holds: dict[bytes, bytes] = {}
    for name, value in ASSIGNMENT.findall(context):
        values.setdefault(name, []).append(value)
        holds[name] = holds.get(value, value)  # `b = a` holds what a holds
    questions = [context[context.rfind(b"\n") :], *map(text, trial.joins)]
    if m := re.fullmatch(rb"\nassert (\d+) == ", questions[0]):
        assert all(q == b" == " for q in questions[1:])
        return [name for name in holds if holds[name] == m.group(1)]
    asked: dict[bytes, int] = {}
    out = []
    for question in questions:
        key = re.fullmatch(rb"\n([a-z]{3}) = ", question).group(1)
        out.append(values[key][asked.get(key, 0)])
        asked[key] = asked.get(key, 0) + 1
    return out


@pytest.mark.parametrize("task", [t for t in TASKS if t != "passkey"])
@pytest.mark.parametrize("length", [63, 64, 200])
@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_trials_hold_their_answers_at_the_depth(task, length, depth):
    trials = TASKS[task](BYTES, length, depth, 4, 6)
    assert trials == TASKS[task](BYTES, length, depth, 4, 6)  # deterministic
    assert trials != TASKS[task](BYTES, length, depth, 4, 6, seed=1)  # and another seed draws others
    for trial in trials:
        assert len(trial.tokens()) == length + 1
        context = text(trial.prefix)
        for start, n in trial.needles:
            assert ASSIGNMENT.fullmatch(context[start : start + n])  # each needle where the trial says
        assert len(ASSIGNMENT.findall(context)) == len(trial.needles)  # and nowhere else
        true = [text(slot) for slot in trial.candidates[0]]
        assert true == expected_answers(trial)
        # Depth: the needle starts round(depth x (C - N)) tokens in; N counts vt's assignment that must follow.
        question = len(context) - context.rfind(b"\n")
        chain = trial.needles[0][1] + (trial.needles[1][1] if task == "vt" else 0)
        assert trial.needles[0][0] == round(depth * (len(context) - question - chain))
        assert len(trial.candidates) == 6
        for slot in range(len(true)):  # candidates disjoint slot by slot, all of the answer's form
            answers = [text(c[slot]) for c in trial.candidates]
            assert len(set(answers)) == 6 and len({len(a) for a in answers}) == 1
        # A distractor is another needle's value or absent from the context.
        present = {v for _, v in ASSIGNMENT.findall(context)} | {n for n, _ in ASSIGNMENT.findall(context)}
        for candidate in trial.candidates[1:]:
            for value in map(text, candidate):
                assert value in present or value not in context


def test_the_passkey_task_is_the_passkey_sequence():
    for length in (44, 64, 300):
        for depth in (0.0, 0.25, 1.0):
            trials = TASKS["passkey"](BYTES, length, depth, 5, 4)
            old = sample_batch(5, length, cell_generator(length, depth), depths=[depth] * 5).tolist()
            assert [t.tokens() for t in trials] == old
            for trial, row in zip(trials, old):
                assert text(trial.candidates[0][0]) == text(row[-N_DIGITS:])
                assert all(text(c[0]) not in text(trial.prefix) for c in trial.candidates[1:])


@pytest.mark.parametrize("task, shortest", [("niah_single", 24), ("niah_multikey", 63), ("niah_multivalue", 62),
                                            ("niah_multiquery", 62), ("vt", 50), ("passkey", 44)])
def test_the_shortest_length_holds_the_template(task, shortest):
    TASKS[task](BYTES, shortest, 0.5, 2, 4)
    with pytest.raises(TooShort, match=f"probe length {shortest - 1} is too short for {task}.*use lengths >= "
                                       f"{shortest}"):
        TASKS[task](BYTES, shortest - 1, 0.5, 2, 4)


# ---- scores against plain model calls ----

def trained_session(tmp_path_factory, overrides: list[str]) -> Session:
    """A tiny run trained here, opened for evaluation on the CPU."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = runner.invoke(app, ["train", *overrides, "pe=rope", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.output
    opened = Session(run_dir, log=lambda *a: None)
    opened.load_model("cpu")
    return opened


@pytest.fixture(scope="module")
def session(tiny_overrides, tmp_path_factory):
    return trained_session(tmp_path_factory, tiny_overrides)


def hand_nll(model, tokens: list[int], positions: list[int]) -> float:
    """The answer tokens' total NLL, one sequence, one plain forward pass."""
    logits, _ = model(torch.tensor([tokens[:-1]]))
    logp = F.log_softmax(logits[0, :, :257].double(), -1)
    return float(sum(-logp[p - 1, tokens[p]] for p in positions))


def hand_greedy(model, trial) -> list[tuple[int, ...]]:
    """The model's greedy answer to each slot, one token per forward pass, the text between slots given."""
    seq, slots = list(trial.prefix), []
    for slot, true in enumerate(trial.candidates[0]):
        answer = []
        for _ in true:
            logits, _ = model(torch.tensor([seq]))
            answer.append(int(logits[0, -1, :257].argmax()))
            seq.append(answer[-1])
        slots.append(tuple(answer))
        seq += trial.joins[slot] if slot < len(trial.joins) else ()
    return slots


@pytest.mark.parametrize("task", ["niah_multikey", "vt"])
def test_likelihood_ranks_equal_a_hand_computation(session, task):
    trials = TASKS[task](BYTES, 70, 0.5, 3, 4)
    scored = rank_answers(session, trials, 70, batch_tokens=200)  # batches of 2 sequences
    with torch.no_grad():
        for trial, (correct, nll, _) in zip(trials, scored):
            nlls = [hand_nll(session.model, trial.tokens(k), trial.answer_positions(k)) for k in range(4)]
            assert nll == pytest.approx(nlls[0], rel=1e-4)
            assert correct == all(nlls[0] < other for other in nlls[1:])


def test_greedy_scores_equal_hand_decoding(session):
    """Both: decoded step by step (the passkey command's) and read off the likelihood pass (the probes')."""
    trials = TASKS["niah_multiquery"](BYTES, 64, 0.25, 2, 3) + TASKS["vt"](BYTES, 64, 1.0, 1, 3)
    with torch.no_grad():
        greedy = [hand_greedy(session.model, t) for t in trials]
    # The model's own greedy answer as the true one is exact; the same with one late token changed is not.
    decoded = [dataclasses.replace(t, candidates=(tuple(g), *t.candidates[1:])) for t, g in zip(trials, greedy)]
    late = [dataclasses.replace(t, candidates=((*g[:-1], g[-1][:-1] + ((g[-1][-1] + 1) % 256,)), *t.candidates[1:]))
            for t, g in zip(trials, greedy)]
    for score in (greedy_exact, lambda *args: [exact for _, _, exact in rank_answers(*args)]):
        assert score(session, decoded, 64) == [True] * 3
        assert score(session, late, 64) == [False] * 3
        assert score(session, trials, 64) == [g == t.candidates[0] for t, g in zip(trials, greedy)]


@pytest.fixture(scope="module")
def passkey_run(tmp_path_factory):
    from test_passkey import TINY

    return trained_session(tmp_path_factory, TINY)


def decoded_before(model, rows: torch.Tensor, batch_tokens: int) -> list[bool]:
    """The passkey scorer as it was before it became a probe task: per sequence, whether 5 greedy steps over its
    batch (``batch_tokens // length`` sequences) give its last 5 tokens."""
    length = rows.shape[1] - 1
    right = []
    for chunk in rows.split(max(1, batch_tokens // length)):
        ids = chunk[:, : length + 1 - N_DIGITS]
        for _ in range(N_DIGITS):
            logits, _ = model(ids)
            ids = torch.cat([ids, logits[:, -1, :257].argmax(-1, keepdim=True)], dim=1)
        right += (ids[:, -N_DIGITS:] == chunk[:, -N_DIGITS:]).all(dim=1).tolist()
    return right


def test_passkey_rows_are_the_rows_of_before(passkey_run):
    rows = pk.passkey_accuracy(passkey_run.run, [48, 96], [0.0, 0.5, 1.0], trials=12, batch_tokens=300,
                               model=passkey_run.model, log=lambda *a: None)
    with torch.no_grad():
        before = [sum(decoded_before(passkey_run.model, sample_batch(12, r["eval_len"], cell_generator(
            r["eval_len"], r["depth"]), depths=[r["depth"]] * 12), 300)) for r in rows]
        assert [r["correct"] for r in rows] == before
        # A model this small retrieves nothing: give half the keys as the model's own greedy digits, so that the
        # two scorers must also agree where a key is retrieved, batch by batch.
        trials = TASKS["passkey"](BYTES, 48, 0.5, 8, 1)
        trials = [dataclasses.replace(t, candidates=(tuple(hand_greedy(passkey_run.model, t)),)) if i % 2 else t
                  for i, t in enumerate(trials)]
        right = decoded_before(passkey_run.model, torch.tensor([t.tokens() for t in trials]), 150)
    assert right == [bool(i % 2) for i in range(8)]
    assert greedy_exact(passkey_run, trials, 48, batch_tokens=150) == right
