"""Which lengths to evaluate: the documented default multiples of the training length, or a user's list.

Torch-free: the CLI parses ``--lengths`` before anything heavy is imported or loaded.
"""

from __future__ import annotations

import re

from ropebench.errors import UserError

DEFAULT_MULTIPLES = (1, 1.25, 1.5, 2, 4, 8, 16)
# ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() then rejects with a traceback.
_INTEGER = re.compile(r"[0-9]+")


def default_lengths(train_seq_len: int, multiples=DEFAULT_MULTIPLES) -> list[int]:
    return sorted({max(1, int(round(m * train_seq_len))) for m in multiples})


def run_lengths(cfg) -> list[int]:
    """A run's evaluation lengths: ``eval.lengths`` when given, else ``eval.multiples`` x its training length."""
    if cfg.eval.get("lengths"):
        return sorted({int(x) for x in cfg.eval.lengths})
    return default_lengths(int(cfg.train.seq_len), cfg.eval.multiples)


def parse_lengths(text: str | None, train_seq_len: int) -> list[int]:
    """``--lengths 64,128,256`` as sorted distinct positive integers; empty: the default lengths."""
    if not text:
        return default_lengths(train_seq_len)
    lengths = []
    for item in text.split(","):
        item = item.strip()
        if not _INTEGER.fullmatch(item) or int(item) <= 0:
            raise UserError(f"evaluation length '{item}' is not a positive integer; use e.g. --lengths 64,128,256")
        lengths.append(int(item))
    return sorted(set(lengths))
