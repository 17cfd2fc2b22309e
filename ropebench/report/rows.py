"""The rows of a results CSV with their numbers parsed, damaged rows skipped with one warning per file.

A row whose number does not parse is damage (a crash mid-write, a hand edit) and is skipped; an empty cell is
"not measured", and "inf"/"nan" a diverged measurement, both read as None.
"""

from __future__ import annotations

from pathlib import Path

from ropebench.eval.cells import finite_float
from ropebench.run.rundir import read_csv_rows

# The numeric columns of every results file ropebench writes (lengths, positions, passkey).
_INTS = ("eval_len", "stride", "n_tokens", "n_windows", "n_documents", "train_seq_len", "position_start",
         "position_end", "trials", "correct")
_FLOATS = ("ppl", "nll", "mean_nll", "rope_factor", "depth", "accuracy", "nll_se", "ppl_crop", "nll_crop", "nll_gain",
           "gain_se", "ppl_crop_source", "nll_gain_source", "gain_se_source")


def int_or_none(value) -> int | None:
    number = finite_float(value)
    # "64.0" is 64; "64.5" and "inf" are not lengths
    return int(number) if number is not None and number.is_integer() else None


def _parse_row(raw: dict, value: str | None) -> dict | None:
    """The row with numbers parsed, or None when it is damaged (see read_rows); the reader has already
    skipped rows with more cells than the header, or too few to reach a required column."""
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
    row["split"] = (row.get("split") or "val").strip()  # rows written before the test split scored validation
    row["logit_scale"] = (row.get("logit_scale") or "none").strip()  # files from before the column: none
    if row.get("eval_len") is None or row["eval_len"] <= 0:
        return None
    if value and row["status"] == "ok" and not (raw.get(value) or "").strip():
        return None  # an ok row without its measurement
    return row


def read_rows(path: Path, required: tuple[str, ...] = (), value: str | None = None) -> list[dict]:
    """Rows of a results CSV, numbers parsed. ``required``: columns the file must have; ``value``: the column
    that must hold a number on a row with status ok. Damaged rows are skipped with one warning naming the file
    and their line numbers; a file that lacks a required column or cannot be read is skipped with one warning
    (the run directory's reader, :func:`ropebench.run.rundir.read_csv_rows`)."""
    return read_csv_rows(path, required, lambda raw: _parse_row(raw, value))
