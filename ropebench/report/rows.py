"""The rows of a results CSV with their numbers parsed, damaged rows skipped with one warning per file.

A row whose number does not parse is damage (a crash mid-write, a hand edit) and is skipped; an empty cell is
"not measured", and "inf"/"nan" a diverged measurement, both read as None.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from ropebench.eval.cells import finite_float

# The numeric columns of every results file ropebench writes (lengths, positions, passkey).
_INTS = ("eval_len", "stride", "n_tokens", "n_windows", "n_documents", "train_seq_len", "position_start",
         "position_end", "trials", "correct")
_FLOATS = ("ppl", "nll", "mean_nll", "rope_factor", "depth", "accuracy")


def int_or_none(value) -> int | None:
    number = finite_float(value)
    # "64.0" is 64; "64.5" and "inf" are not lengths
    return int(number) if number is not None and number.is_integer() else None


def warn(message: str) -> None:
    """One line on stderr; results still load, minus what the line names."""
    print(f"warning: {message}", file=sys.stderr)


def _parse_row(raw: dict, required: tuple[str, ...], value: str | None) -> dict | None:
    """The row with numbers parsed, or None when it is damaged (see read_rows)."""
    if None in raw or any(raw.get(c) is None for c in required):
        return None  # more or fewer cells than the header has
    row: dict = dict(raw)
    for col in (c for c in (*_INTS, *_FLOATS) if c in row):
        text = (row[col] or "").strip()
        row[col] = (int_or_none if col in _INTS else finite_float)(text)
        if text and row[col] is None:
            try:
                float(text)  # "inf"/"nan" is a diverged measurement, kept as "no value"; "abc" is damage
            except ValueError:
                return None
    row["status"] = (row.get("status") or "ok").strip()
    row["rope_scaling"] = (row.get("rope_scaling") or "none").strip()
    if row.get("eval_len") is None or row["eval_len"] <= 0:
        return None
    if value and row["status"] == "ok" and not (raw.get(value) or "").strip():
        return None  # an ok row without its measurement
    return row


def read_rows(path: Path, required: tuple[str, ...] = (), value: str | None = None) -> list[dict]:
    """Rows of a results CSV, numbers parsed. ``required``: columns the file must have; ``value``: the column
    that must hold a number on a row with status ok. Damaged rows are skipped with one warning naming the file
    and their line numbers; a file that lacks a required column or cannot be read is skipped with one warning."""
    bad: list[int] = []
    rows: list[dict] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                warn(f"skipping '{path}': it has no column {', '.join(missing)}")
                return []
            while True:
                try:
                    raw = next(reader)
                except StopIteration:
                    break
                except csv.Error:
                    bad.append(reader.line_num)
                    continue
                row = _parse_row(raw, required, value)
                if row is None:
                    bad.append(reader.line_num)
                else:
                    rows.append(row)
    except (OSError, UnicodeDecodeError) as exc:
        warn(f"skipping '{path}': {exc}".splitlines()[0])
        return []
    if bad:
        lines = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        many = "s" * (len(bad) > 1)
        warn(f"'{path}': skipped {len(bad)} damaged row{many} (line{many} {lines})")
    return rows
