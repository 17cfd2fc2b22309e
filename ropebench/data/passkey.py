"""The passkey retrieval task (Mohtashami & Jaggi 2023, arXiv 2305.16300; the test PI and YaRN report): a
5-digit key hidden in filler. This module makes the sequences for training (``data=passkey``) and the sentences,
keys and checks that scoring shares (``ropebench.data.probes`` builds the same sequences in any tokenizer for
``ropebench.eval.passkey`` and ``ropebench probe``), and nothing else.

A sequence of L + 1 byte tokens is ``filler | key sentence | filler | question | 5 answer digits``: the key
sentence starts at ``round(depth x filler tokens)``, so depth 0 puts it first and depth 1 right before the
question. The answer digits are the last 5 tokens, i.e. the last 5 targets of a training window of L inputs.
``data=passkey`` trains on such sequences at the training length (depth uniform in [0, 1], loss on the 5
answer digits only -- see ``PasskeySplit.batch``).

The wording is shorter than the papers' ("The pass key is 12345. Remember it. 12345 is the pass key." and
"What is the pass key? The pass key is") so that key, question and answer fit the CPU default training length
of 64 tokens with filler to spare; for a byte model trained from scratch the wording carries no meaning anyway.
Filler never contains digits or a newline, so the digits after the newline-led question can only come from
the key sentence: the model has to retrieve them, and the distance it retrieves over grows with the length.

Layering: imports only torch and ``ropebench.errors``; ``ropebench.data.corpus`` imports this module for
``data=passkey`` and makes the corpus of its splits (``PasskeySplit``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from ropebench.errors import UserError

FILLER = b"The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEY_PREFIX, KEY_SUFFIX = b"The pass key is ", b". "
QUESTION = b"\nThe pass key is "
N_DIGITS = 5
_DIGIT0 = ord("0")
IGNORE = -100  # torch.nn.functional.cross_entropy's default ignore_index
# Inputs L must hold key sentence + question + the first 4 answer digits (the 5th is only a target).
MIN_LEN = len(KEY_PREFIX) + N_DIGITS + len(KEY_SUFFIX) + len(QUESTION) + N_DIGITS - 1


def check_length(length: int, what: str = "passkey length") -> int:
    if length < MIN_LEN:
        raise UserError(f"{what} {length} is too short for the passkey task: key sentence, question and answer "
                        f"need at least {MIN_LEN} tokens; use {MIN_LEN} or more")
    return length


def check_depth(depth: float, task: str = "passkey") -> float:
    if not (isinstance(depth, (int, float)) and 0.0 <= depth <= 1.0):  # NaN fails both comparisons
        raise UserError(f"{task} depth {depth} is outside [0, 1]; use fractions such as 0,0.25,0.5,0.75,1")
    return float(depth)


def key_position(length: int, depth: float) -> int:
    """Index of the key sentence's first token in a sequence of ``length`` inputs (+1 target)."""
    return round(check_depth(depth) * (length - MIN_LEN))  # length - MIN_LEN filler tokens in all


def make_sequence(length: int, depth: float, digits: list[int], phase: int = 0) -> list[int]:
    """``length + 1`` tokens; ``phase`` shifts where in the filler cycle the text starts (variety, no meaning)."""
    check_length(length)
    if len(digits) != N_DIGITS or not all(0 <= d <= 9 for d in digits):
        raise ValueError(f"need {N_DIGITS} digits 0-9, got {digits}")
    key = bytes(_DIGIT0 + d for d in digits)
    n_filler = length - MIN_LEN
    before = key_position(length, depth)
    reps = (phase + n_filler) // len(FILLER) + 1
    filler = (FILLER * reps)[phase : phase + n_filler]  # one continuous filler stream, cut by the key sentence
    seq = filler[:before] + KEY_PREFIX + key + KEY_SUFFIX + filler[before:] + QUESTION + key
    assert len(seq) == length + 1
    return list(seq)


def cell_generator(length: int, depth: float, seed: int = 0) -> torch.Generator:
    """The generator of the keys scored at (length, depth): seeded by the cell alone, so every run, scaling and
    re-run sees the same keys there."""
    cell = f"passkey:{length}:{depth:.6f}" + (f":{seed}" if seed else "")
    return torch.Generator().manual_seed(zlib.crc32(cell.encode()))


def draw_keys(batch_size: int, generator: torch.Generator) -> tuple[list[list[int]], list[int]]:
    """(digits, filler phases) of ``batch_size`` sequences, drawn in this order from ``generator``."""
    digits = torch.randint(10, (batch_size, N_DIGITS), generator=generator).tolist()
    phases = torch.randint(len(FILLER), (batch_size,), generator=generator).tolist()
    return digits, phases


def sample_batch(batch_size: int, length: int, generator: torch.Generator, depths=None) -> torch.Tensor:
    """(B, length + 1) int64 sequences; random keys and filler phases, and depths uniform in [0, 1] unless given."""
    digits, phases = draw_keys(batch_size, generator)
    if depths is None:
        depths = torch.rand(batch_size, generator=generator, dtype=torch.float64).tolist()
    rows = [make_sequence(length, d, k, p) for d, k, p in zip(depths, digits, phases)]
    return torch.tensor(rows, dtype=torch.int64)


@dataclass
class PasskeySplit:
    """Generates passkey windows on demand; the same ``batch`` interface as ``ropebench.data.TokenSplit``."""

    name: str

    def batch(self, batch_size: int, seq_len: int, generator: torch.Generator):
        check_length(seq_len, "train.seq_len")
        rows = sample_batch(batch_size, seq_len, generator)
        # Loss on the answer digits only (cross_entropy skips IGNORE): with every target counted, the default
        # tiny model learned the filler perfectly and the answer not at all in 600 steps (answer NLL stayed at
        # ln 10), because the irreducible targets (the key's random digits, where the key begins) dominate the
        # gradient. The loss then reads directly: ln 10 = 2.30 is guessing, 0 is perfect retrieval.
        targets = rows[:, 1:].clone()
        targets[:, :-N_DIGITS] = IGNORE
        return rows[:, :-1], targets

    def documents(self, min_len: int = 0):
        raise UserError("data=passkey has no text documents to measure perplexity on; "
                        "measure it with `ropebench passkey RUN_DIR` instead of eval-length")
