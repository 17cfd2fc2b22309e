"""Algorithmic tasks for length generalization (``data=task data.task=NAME``): the instances, their vocabulary,
and the split between training and test instances. Batching lives in ``ropebench.data.task_corpus``.

As in Kazemnejad et al. 2023 ("The Impact of Positional Encoding on Length Generalization in Transformers",
arXiv 2305.19466), a model is trained on instances of lengths U(1, L) and tested on longer ones, with the loss
on the answer tokens only. An instance's *length* n counts its items, never its tokens:

==========  ===============================================  ==================================  =======  ======
task        n is                                             tokens                              count    answer
==========  ===============================================  ==================================  =======  ======
copy        digits                                           ^ x1..xn = x1..xn .                 2n + 3   n + 1
reverse     digits                                           ^ x1..xn = xn..x1 .                 2n + 3   n + 1
sort        digits (repeats allowed)                         ^ x1..xn = sorted(x) .              2n + 3   n + 1
addition    digits of each operand, least significant        ^ a1 b1 .. an bn = c1..c(n+1) .     3n + 4   n + 2
            first, interleaved; the sum has n + 1 digits
            (the last is the carry, possibly 0)
parity      bits; the answer is the running parity           ^ b1..bn = p1..pn .                 2n + 3   n + 1
            (p_i = parity of b1..bi, p_n the parity)
mqar        key-value pairs (distinct keys; values digits),  ^ k1 v1 .. kn vn = q1 a1 .. qn an .  4n + 3   n + 1
            then every key queried once in random order
            (Arora et al. 2023, Zoology)
==========  ===============================================  ==================================  =======  ======

"^" (BOS) starts every instance -- NoPE reads positions off it through the causal mask --, "=" is the answer
marker and "." (EOS) ends every instance; the answer is what the model must produce: every
token after "=" (the closing "." included), except MQAR's query keys, which are given. A model trained with
``train.seq_len`` T reads T tokens, so the longest training instance needs T >= tokens(L) - 1.

Training and test instances are disjoint by construction: an instance is a test instance when a hash of its
tokens falls in a fixed 1/8 of the range (``is_test``), whatever the seed; the training stream rejects test
instances and the test sets (and the validation loss) draw only test instances. The rare length whose side
holds no instance at all (parity of 1 bit: both instances might hash to one side) is never drawn for that side.
"""

from __future__ import annotations

import functools
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ropebench.errors import UserError, choose

PAD, BOS, EOS, ANS, PLUS = 0, 1, 2, 3, 4
DIGIT0 = 5  # the digits 0-9 are 5 .. 14
N_KEYS = 64  # MQAR's keys are KEY0 .. KEY0 + 63: at most 64 pairs (distinct keys)
KEY0 = DIGIT0 + 10
VOCAB_SIZE = KEY0 + N_KEYS
SYMBOLS = ("_", "^", ".", "=", "+", *"0123456789", *(f"k{i}" for i in range(N_KEYS)))
IGNORE = -100  # torch.nn.functional.cross_entropy's default ignore_index
TEST_SHARE = 8  # one instance in 8 (by hash) is a test instance
_MAX_TRIES = 100_000  # a side is never this rare at a length it holds (see _side_is_empty)


@dataclass(frozen=True)
class Instance:
    """One instance: its tokens, which of them are answer tokens, and its length n (items, not tokens)."""

    tokens: tuple[int, ...]
    answer: tuple[bool, ...]
    length: int


@dataclass(frozen=True)
class Task:
    name: str
    make: Callable[[int, random.Random], Instance]  # an instance of length n, drawn uniformly
    n_tokens: Callable[[int], int]  # tokens of an instance of length n
    default_len: int  # L when data.task_len is 0
    max_len: int | None = None  # the longest instance the vocabulary can express


def _digits(n: int, rng: random.Random, base: int = 10) -> list[int]:
    return [rng.randrange(base) for _ in range(n)]


def _with_answer(prompt: list[int], answer: list[int], n: int) -> Instance:
    """``prompt = answer .``: everything after the marker is answer, the closing EOS included."""
    tokens = (BOS, *prompt, ANS, *answer, EOS)
    return Instance(tokens, (False,) * (len(prompt) + 2) + (True,) * (len(answer) + 1), n)


def _tok(digits: list[int]) -> list[int]:
    return [DIGIT0 + d for d in digits]


def make_copy(n: int, rng: random.Random) -> Instance:
    x = _digits(n, rng)
    return _with_answer(_tok(x), _tok(x), n)


def make_reverse(n: int, rng: random.Random) -> Instance:
    x = _digits(n, rng)
    return _with_answer(_tok(x), _tok(x[::-1]), n)


def make_sort(n: int, rng: random.Random) -> Instance:
    x = _digits(n, rng)
    return _with_answer(_tok(x), _tok(sorted(x)), n)


def make_addition(n: int, rng: random.Random) -> Instance:
    """Least significant digit first, so that the carry flows in the order the digits are written, and the
    operands' digits interleaved (a1 b1 a2 b2 ..), so that each digit of the sum reads one place of the prompt:
    with the operands one after the other, RoPE got 0.005 exact match inside the training range (L = 6, 1000
    steps), interleaved 0.82 (3000 steps)."""
    a, b = _digits(n, rng), _digits(n, rng)
    total, carry = [], 0
    for da, db in zip(a, b):
        carry, digit = divmod(da + db + carry, 10)
        total.append(digit)
    return _with_answer(_tok([d for pair in zip(a, b) for d in pair]), _tok([*total, carry]), n)


def make_parity(n: int, rng: random.Random) -> Instance:
    """The answer is the running parity of the bits (p_i = parity of b1..bi; the last one is the parity), the
    scratchpad form: the one-bit answer alone was not learned even within the training range at this scale."""
    bits = _digits(n, rng, base=2)
    running = [sum(bits[: i + 1]) % 2 for i in range(n)]
    return _with_answer(_tok(bits), _tok(running), n)


def make_mqar(n: int, rng: random.Random) -> Instance:
    """n pairs ``key value`` (distinct keys), then each key once in random order, each followed by its value."""
    keys = rng.sample(range(N_KEYS), n)
    values = _digits(n, rng)
    order = rng.sample(range(n), n)
    context = [t for k, v in zip(keys, values) for t in (KEY0 + k, DIGIT0 + v)]
    queries = [t for i in order for t in (KEY0 + keys[i], DIGIT0 + values[i])]
    tokens = (BOS, *context, ANS, *queries, EOS)
    answer = (False,) * (2 * n + 2) + (False, True) * n + (True,)
    return Instance(tokens, answer, n)


TASKS = {t.name: t for t in (
    Task("copy", make_copy, lambda n: 2 * n + 3, 6),
    Task("reverse", make_reverse, lambda n: 2 * n + 3, 6),
    Task("sort", make_sort, lambda n: 2 * n + 3, 6),
    Task("addition", make_addition, lambda n: 3 * n + 4, 4),
    Task("parity", make_parity, lambda n: 2 * n + 3, 6),
    Task("mqar", make_mqar, lambda n: 4 * n + 3, 4, max_len=N_KEYS),
)}


def get_task(name: str) -> Task:
    return TASKS[choose("data.task", str(name), TASKS)]


def train_len(data_cfg) -> int:
    """L of a ``data=task`` config: ``data.task_len``, or the task's default when it is 0."""
    return int(data_cfg.get("task_len", 0) or 0) or get_task(data_cfg.task).default_len


def window(task: str, length: int) -> int:
    """The ``train.seq_len`` an instance of ``length`` needs: its tokens but the last (which is only a target)."""
    return get_task(task).n_tokens(length) - 1


def check_task_config(data_cfg, seq_len: int) -> None:
    """The task exists, its L is >= 1 and expressible, and the training window holds the longest instance."""
    task = get_task(data_cfg.task)
    raw = int(data_cfg.get("task_len", 0) or 0)
    if raw < 0:
        raise UserError(f"data.task_len must be >= 1 (0: the task's default, {task.default_len}), got {raw}")
    length = train_len(data_cfg)
    if task.max_len is not None and length > task.max_len:
        raise UserError(f"data.task_len={length} is above what task {task.name} can express ({task.max_len})")
    need = window(task.name, length)
    if seq_len < need:
        raise UserError(f"train.seq_len={seq_len} cannot hold the longest training instance of task {task.name} "
                        f"(length {length}: {need + 1} tokens); use train.seq_len={need} or more")


def is_test(task: str, tokens: tuple[int, ...]) -> bool:
    """Whether an instance belongs to the test side: a fixed hash of its tokens, the same for every run."""
    return zlib.crc32(task.encode() + b":" + bytes(tokens)) % TEST_SHARE == 0


@functools.cache
def _side_is_empty(task: str, length: int, test: bool) -> bool:
    """Whether no instance of ``length`` falls on that side. Only tiny instance spaces can be empty on a side
    (parity of 1-3 bits); 4000 draws from a space that small find every member, so the answer is exact there.
    Its own random stream: the answer never depends on what a caller drew before."""
    rng = random.Random(f"{task}:{length}")
    return not any(is_test(task, TASKS[task].make(length, rng).tokens) == test for _ in range(4000))


def draw(task: str, length: int, rng: random.Random, test: bool) -> Instance:
    """An instance of ``length`` from one side, uniform over that side's instances (rejection sampling)."""
    make = TASKS[task].make
    for _ in range(_MAX_TRIES):
        instance = make(length, rng)
        if is_test(task, instance.tokens) == test:
            return instance
    raise RuntimeError(f"no {'test' if test else 'training'} instance of {task} at length {length}")


def lengths_on_side(task: str, lengths, test: bool) -> list[int]:
    """The lengths of ``lengths`` that the task can express and that hold an instance on that side."""
    limit = TASKS[task].max_len
    return [n for n in lengths if (limit is None or n <= limit) and not _side_is_empty(task, n, test)]


def sample(task: str, lengths: list[int], count: int, rng: random.Random, test: bool) -> list[Instance]:
    """``count`` instances, each of a length drawn uniformly from ``lengths`` (already filtered by
    ``lengths_on_side``), then an instance of it from the side."""
    return [draw(task, rng.choice(lengths), rng, test) for _ in range(count)]


def render(tokens) -> str:
    """Tokens as text, e.g. ``3 1 4 = 3 1 4 .`` (for messages and tests)."""
    return " ".join(SYMBOLS[t] for t in tokens)
