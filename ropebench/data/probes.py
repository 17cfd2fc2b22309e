"""Retrieval probes: RULER's needle tasks (Hsieh et al. 2024, arXiv 2404.06654) adapted to small base models, and
the passkey, as token sequences with candidate answers, in any tokenizer. This module makes the trials and
nothing else (``ropebench.eval.probes`` scores them).

Each needle is a Python-style assignment line in the passkey's filler (English sentences without digits, newlines
or ``=``), so the pattern a question repeats occurs only at the needles. Keys and variable names are 3 lowercase
letters, values 5-digit numbers:

* ``niah_single``: one needle ``\\nqzk = 48213\\n``; the question ``\\nqzk =``; the answer `` 48213``.
* ``niah_multikey``: the same plus two needles of other keys anywhere in the filler; their values are the first
  distractors.
* ``niah_multivalue``: one key assigned two values in two needles; the answer is both, in the order they appear:
  ``\\nqzk =`` `` 48213`` ``\\nqzk =`` `` 90377``.
* ``niah_multiquery``: two keys; the question asks for both, in a random order; the first distractor swaps the
  values.
* ``vt`` (variable tracking): ``\\nqzk = 48213\\n`` and later ``\\nwbd = qzk\\n``; the question ``\\nassert 48213 ==``
  asks which variables hold the value, in the order they were assigned: `` qzk`` `` ==`` `` wbd``; the first
  distractor shifts the names by one.
* ``passkey``: the passkey task's sequence (``ropebench.data.passkey``), its keys drawn as the passkey scorer
  always drew them.

A trial is ``lead | context | question | answer slots, the given text between them``; its true sequence has
exactly ``length + 1`` tokens (``length`` inputs; the last answer token is only a target, as in the passkey task).
Its K candidate answers are the true one and K - 1 distractors of the same form, drawn without replacement with
the context's keys and values: candidates are disjoint slot by slot, and a distractor that is no other needle's
value appears nowhere in the context. A leading space that every candidate of a slot encodes as separate tokens
(bytes) is given with the question instead: the same for all candidates, it cannot rank them.

Depth: the needle at the depth starts ``round(depth x (C - N))`` tokens into the context of C tokens, N being that
needle plus the lines that must follow it (vt's second assignment): depth 0 puts it first, depth 1 as late as it
can be. The other needles lie at random around it -- for that the filler holds at least the longest of them, which
sets each task's shortest length.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ropebench.data.passkey import FILLER, KEY_PREFIX, KEY_SUFFIX, QUESTION, cell_generator, check_depth, draw_keys
from ropebench.errors import UserError

Tokens = tuple[int, ...]
Line = tuple[str, ...]  # a needle's text in pieces, each encoded on its own: its value's tokens are the answer's
NAME_LETTERS = 3
VALUES = range(10_000, 100_000)
MULTIKEY_OTHERS = 2  # distractor keys of niah_multikey
MULTIVALUE_VALUES = 2  # values of niah_multivalue's key
MULTIQUERY_KEYS = 2  # keys niah_multiquery asks for
VT_VARIABLES = 2  # variables vt's chain assigns the value to


@dataclass(frozen=True)
class Encoder:
    """A tokenizer as the probes use it: ``encode(text)`` without special tokens, and ``lead``, the tokens its
    model expects before any text (a Hugging Face model's BOS; none for a ropebench run)."""

    encode: Callable[[str], list[int]]
    lead: Tokens = ()


@dataclass(frozen=True)
class Trial:
    """One probe sequence and its candidate answers."""

    prefix: Tokens  # lead, context and question: every token before the first answer token
    joins: tuple[Tokens, ...]  # the given tokens between answer slots (the next slot's question)
    candidates: tuple[tuple[Tokens, ...], ...]  # K answers, one token tuple per slot; [0] is the true one
    needles: tuple[tuple[int, int], ...]  # (start, tokens) of each needle in prefix; [0] is the one at the depth

    def tokens(self, k: int = 0) -> list[int]:
        """The sequence with candidate ``k`` as the answer."""
        out = list(self.prefix)
        for slot, answer in enumerate(self.candidates[k]):
            out += answer
            out += self.joins[slot] if slot < len(self.joins) else ()
        return out

    def answer_positions(self, k: int = 0) -> list[int]:
        """The indices in ``tokens(k)`` of candidate ``k``'s tokens."""
        positions, at = [], len(self.prefix)
        for slot, answer in enumerate(self.candidates[k]):
            positions += range(at, at + len(answer))
            at += len(answer) + (len(self.joins[slot]) if slot < len(self.joins) else 0)
        return positions


class TooShort(UserError):
    """The length cannot hold a task's needles, question and answer (and the filler its placement needs)."""

    def __init__(self, task: str, length: int, needed: int):
        super().__init__(f"probe length {length} is too short for {task}: its needles, question and answer need "
                         f"{needed} tokens of this tokenizer; use lengths >= {needed}")
        self.needed = needed


@dataclass
class Layout:
    """A trial in text: what the tokenizer encodes and the assembly places."""

    target: list[Line]  # the needle at the depth, then the lines that must follow it
    others: list[list[Line]]  # the other needles, each list in the order it must keep
    question: str
    joins: list[str]
    answers: list[list[str]]  # K candidates x slots, [0] the true one
    # Slot j asks for needle j's value (target, then the others): the slots follow the needles' order in the context.
    by_appearance: bool = False


# ---- the tasks, in text -------------------------------------------------------------------------------------------

def _name_pool() -> list[str]:
    # No name the filler or a question spells ("sky", "ass" of "assert"): a name occurs only where it is a name.
    text = FILLER.decode().lower() + " assert"
    names = ("".join(letters) for letters in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=NAME_LETTERS))
    return [name for name in names if name not in text]


NAMES = _name_pool()


def _names(rng: random.Random, n: int) -> list[str]:
    return rng.sample(NAMES, n)


def _values(rng: random.Random, n: int) -> list[str]:
    return [str(v) for v in rng.sample(VALUES, n)]


def _assign(name: str, value: str) -> Line:
    return (f"\n{name} =", f" {value}", "\n")


def _spaced(answers) -> list[list[str]]:
    return [[f" {x}" for x in answer] for answer in answers]


def _groups(items: list[str], size: int, count: int) -> list[list[str]]:
    return [items[i * size : (i + 1) * size] for i in range(count)]


def niah_single(rng: random.Random, k: int) -> Layout:
    (key,) = _names(rng, 1)
    values = _values(rng, k)
    return Layout([_assign(key, values[0])], [], f"\n{key} =", [], _spaced([v] for v in values))


def niah_multikey(rng: random.Random, k: int) -> Layout:
    keys = _names(rng, 1 + MULTIKEY_OTHERS)
    values = _values(rng, len(keys) + k - 1)  # the needles' values, then absent ones
    lines = [_assign(key, value) for key, value in zip(keys, values)]
    return Layout(lines[:1], [[line] for line in lines[1:]], f"\n{keys[0]} =", [],
                  _spaced([v] for v in [values[0], *values[1:k]]))


def niah_multivalue(rng: random.Random, k: int) -> Layout:
    n = MULTIVALUE_VALUES
    (key,) = _names(rng, 1)
    values = _values(rng, n * k)  # the key's values, then K - 1 absent tuples
    lines = [_assign(key, value) for value in values[:n]]
    return Layout(lines[:1], [[line] for line in lines[1:]], f"\n{key} =", [f"\n{key} ="] * (n - 1),
                  _spaced(_groups(values, n, k)), by_appearance=True)


def niah_multiquery(rng: random.Random, k: int) -> Layout:
    n = MULTIQUERY_KEYS
    keys, values = _names(rng, n), _values(rng, n * k)
    order = rng.sample(range(n), n)  # the order the question asks for the keys
    true = [values[i] for i in order]
    wrong = [true[s:] + true[:s] for s in range(1, n)]  # the other keys' values: in the context, wrongly assigned
    answers = [true, *wrong, *_groups(values[n:], n, k - n)][:k]
    lines = [_assign(key, value) for key, value in zip(keys, values)]
    return Layout(lines[:1], [[line] for line in lines[1:]], f"\n{keys[order[0]]} =",
                  [f"\n{keys[i]} =" for i in order[1:]], _spaced(answers))


def vt(rng: random.Random, k: int) -> Layout:
    n = VT_VARIABLES
    names, (value,) = _names(rng, n * k), _values(rng, 1)
    true = names[:n]
    chain = [_assign(true[0], value), *(_assign(b, a) for a, b in zip(true, true[1:]))]
    wrong = [true[1:] + true[:1]] if n > 1 else []  # the chain's own names, each one slot off
    answers = [true, *wrong, *_groups(names[n:], n, k - 1 - len(wrong))][:k]
    return Layout(chain, [], f"\nassert {value} ==", [" =="] * (n - 1), _spaced(answers))


def passkey(key: str, wrong: list[str]) -> Layout:
    """The passkey sequence (``ropebench.data.passkey``), the question's trailing space given with the answer."""
    line = (KEY_PREFIX.decode().rstrip(" "), f" {key}", KEY_SUFFIX.decode())
    return Layout([line], [], QUESTION.decode().rstrip(" "), [], _spaced([x] for x in [key, *wrong]))


LAYOUTS: dict[str, Callable[[random.Random, int], Layout]] = {
    "niah_single": niah_single, "niah_multikey": niah_multikey, "niah_multivalue": niah_multivalue,
    "niah_multiquery": niah_multiquery, "vt": vt,
}


# ---- assembly: tokens, filler, placement --------------------------------------------------------------------------

def _encode_answers(enc: Encoder, layout: Layout):
    """(question, joins, candidates) in tokens; a leading space every candidate of a slot encodes as separate tokens
    moves into the given text before the slot."""
    space = tuple(enc.encode(" "))
    given = [tuple(enc.encode(text)) for text in (layout.question, *layout.joins)]
    slots = []
    for j in range(len(layout.answers[0])):
        encoded = [tuple(enc.encode(answer[j])) for answer in layout.answers]
        if space and all(len(e) > len(space) and e[: len(space)] == space for e in encoded):
            encoded = [e[len(space) :] for e in encoded]
            given[j] += space
        slots.append(encoded)
    candidates = tuple(tuple(slot[k] for slot in slots) for k in range(len(layout.answers)))
    return given[0], tuple(given[1:]), candidates


def _merge(rng: random.Random, lists: list[list]) -> list:
    """The items of ``lists`` in a random order that keeps each list's own order (uniform over such orders)."""
    rest = [list(items) for items in lists if items]
    out = []
    while rest:
        pick = rng.choices(range(len(rest)), weights=[len(r) for r in rest])[0]
        out.append(rest[pick].pop(0))
        rest = [r for r in rest if r]
    return out


def _spread(rng: random.Random, lines: list, filler: list[int]) -> tuple[list[int], list[int]]:
    """``lines`` (index, tokens) inserted in order at random places of ``filler``: (tokens, each line's start)."""
    cuts = sorted(rng.randint(0, len(filler)) for _ in lines)
    out, starts, done = [], [], 0
    for cut, (_, tokens) in zip(cuts, lines):
        out += filler[done:cut]
        starts.append(len(out))
        out += tokens
        done = cut
    return out + filler[done:], starts


def _place(rng: random.Random, target: list[Tokens], others: list[list], filler: list[int], depth: float):
    """The context: the target needle ``round(depth x (C - N))`` tokens in, the others at random around it (each
    list in its order). Returns (tokens, the start of each needle by index). ``others``: lists of (index, tokens)."""
    lines = [(i, tokens) for i, tokens in enumerate(target)]
    chain = sum(len(t) for t in target)
    moves = _merge(rng, others)
    total = len(filler) + chain + sum(len(t) for _, t in moves)
    at = round(depth * (total - chain))
    # The first k moves go before the target: they and the filler before it fill exactly `at` tokens, the rest
    # fits after it. With at least the longest line of filler some k always works.
    sums = list(itertools.accumulate((len(t) for _, t in moves), initial=0))
    low = sums[-1] + at + chain - total
    k = rng.choice([i for i, s in enumerate(sums) if low <= s <= at])
    head, head_starts = _spread(rng, moves[:k], filler[: at - sums[k]])
    after = _merge(rng, [lines[1:], moves[k:]])
    tail, tail_starts = _spread(rng, after, filler[at - sums[k] :])
    starts = dict(zip((i for i, _ in moves[:k]), head_starts))
    starts[0] = at
    offset = at + len(target[0])
    starts.update((i, offset + s) for (i, _), s in zip(after, tail_starts))
    return head + list(target[0]) + tail, starts


def _filler(enc: Encoder, n: int, phase: int) -> list[int]:
    """``n`` tokens of one continuous filler stream starting ``phase`` tokens into it."""
    unit = enc.encode(FILLER.decode())
    phase %= len(unit)
    return (unit * ((phase + n) // len(unit) + 1))[phase : phase + n]


def assemble(layout: Layout, enc: Encoder, task: str, length: int, depth: float, phase: int,
             rng: random.Random) -> Trial:
    """The trial of ``layout`` with exactly ``length + 1`` tokens (the true answer's)."""
    target = [tuple(t for piece in line for t in enc.encode(piece)) for line in layout.target]
    others = [[tuple(t for piece in line for t in enc.encode(piece)) for line in chain] for chain in layout.others]
    question, joins, candidates = _encode_answers(enc, layout)
    fixed = (len(enc.lead) + sum(map(len, target)) + sum(len(t) for chain in others for t in chain) + len(question)
             + sum(map(len, joins)) + sum(map(len, candidates[0])))
    spare = max((len(t) for chain in others for t in chain), default=0)
    if length + 1 - fixed < spare:
        raise TooShort(task, length, fixed - 1 + spare)
    indexed, index = [], len(target)
    for chain in others:
        indexed.append([(index + i, tokens) for i, tokens in enumerate(chain)])
        index += len(chain)
    context, starts = _place(rng, target, indexed, _filler(enc, length + 1 - fixed, phase), check_depth(depth, "probe"))
    lengths = [len(t) for t in target] + [len(t) for chain in others for t in chain]
    needles = tuple((len(enc.lead) + starts[i], n) for i, n in enumerate(lengths))
    if layout.by_appearance:  # slot j is needle j's value: ask in the order the needles appear
        order = sorted(range(len(candidates[0])), key=lambda j: needles[j][0])
        candidates = tuple(tuple(answer[j] for j in order) for answer in candidates)
    return Trial(tuple(enc.lead) + tuple(context) + question, joins, candidates, needles)


# ---- the trials of one cell ---------------------------------------------------------------------------------------

def _cell_rng(task: str, length: int, depth: float, seed: int) -> random.Random:
    # Seeded by the cell alone: every run, scaling and re-run is asked the same trials at (task, length, depth).
    return random.Random(zlib.crc32(f"{task}:{length}:{depth:.6f}:{seed}".encode()))


def ruler_trials(task: str, enc: Encoder, length: int, depth: float, trials: int, candidates: int,
                 seed: int = 0) -> list[Trial]:
    rng = _cell_rng(task, length, depth, seed)
    make = LAYOUTS[task]
    return [assemble(make(rng, candidates), enc, task, length, depth, rng.randrange(len(FILLER)), rng)
            for _ in range(trials)]


def passkey_trials(enc: Encoder, length: int, depth: float, trials: int, candidates: int,
                   seed: int = 0) -> list[Trial]:
    """The passkey task's trials; keys and filler phases drawn as the passkey scorer always drew them, so a byte
    run's sequences are exactly ``ropebench.data.passkey.make_sequence``'s; the K - 1 distractor keys from an rng of
    their own."""
    digits, phases = draw_keys(trials, cell_generator(length, depth, seed))
    rng = _cell_rng("passkey-candidates", length, depth, seed)
    out = []
    for key_digits, phase in zip(digits, phases):
        key = "".join(map(str, key_digits))
        wrong = [f"{w:05d}" for w in rng.sample(range(10 ** len(key)), candidates)]
        wrong = [w for w in wrong if w != key][: candidates - 1]
        out.append(assemble(passkey(key, wrong), enc, "passkey", length, depth, phase, rng))
    return out


def _ruler(task: str):
    def generate(enc: Encoder, length: int, depth: float, trials: int, candidates: int, seed: int = 0):
        return ruler_trials(task, enc, length, depth, trials, candidates, seed)

    return generate


#: name -> generate(encoder, length, depth, trials, candidates, seed) -> trials
TASKS: dict[str, Callable[..., list[Trial]]] = {
    **{name: _ruler(name) for name in LAYOUTS},
    "passkey": passkey_trials,
}
