"""Perplexity tables (encodings x evaluation lengths) as Markdown, CSV or LaTeX.

Cells read ``mean ± std`` (sample std over seeds) when a label has several seeds, else the value; ``n/a``
where the encoding cannot run at that length (learned positions beyond max_len), ``—`` where nothing
succeeded or nothing was evaluated.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.report.results import Point, aggregate, load_results, select
from ropebench.report.tokens import warn_unequal_tokens
from ropebench.run.rundir import atomic_write_text

FORMATS = ("md", "csv", "latex")
_SUFFIX_FORMAT = {".md": "md", ".markdown": "md", ".csv": "csv", ".tex": "latex"}
NA = "n/a"
MISSING = "—"


def cell(point: Point | None) -> str:
    if point is None or point.status == "missing":
        return MISSING
    if point.status == "n/a":
        return NA
    if point.n > 1:
        return f"{point.mean:.2f} ± {point.std:.2f}"
    return f"{point.mean:.2f}"


def _lengths(lengths: Sequence | None, available: Iterable[int]) -> list[int]:
    """The table's columns: the evaluated lengths, or the ones asked for. A length no run was evaluated at
    gets a warning (its column is all "—"), and refused when none of the asked lengths was evaluated."""
    available = sorted(set(available))
    if lengths is None:
        return available
    out = []
    for raw in lengths:
        text = str(raw).strip()
        value = int(text) if text.isdigit() and not isinstance(raw, (bool, float)) else 0
        if value <= 0:
            raise UserError(f"evaluation length '{raw}' is not a positive integer; give lengths like 64,128,256")
        out.append(value)
    absent = [n for n in out if n not in available]
    have = ", ".join(map(str, available)) or "none"
    if absent and len(absent) == len(out):
        raise UserError(f"no run here was evaluated at length {', '.join(map(str, absent))}; the evaluated "
                        f"lengths are {have}")
    if absent:
        print(f"warning: no run here was evaluated at length {', '.join(map(str, absent))} (its column is "
              f"empty); the evaluated lengths are {have}", file=sys.stderr)
    return out


def table_cells(
    paths: Iterable[str | Path], lengths: Sequence | None = None, protocol: str = "nonoverlapping"
) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """The table's columns and its rows as (label, cells), before any formatting."""
    rows = select(load_results(paths), protocol)
    warn_unequal_tokens(rows)
    series = aggregate(rows)
    cols = _lengths(lengths, (n for s in series for n in s.points))
    return cols, [(s.label, [cell(s.points.get(n)) for n in cols]) for s in series]


def _md(cols: list[int], rows) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(["encoding", *cols]), "|" + "---|" + "---:|" * len(cols)]
    out += [line([label, *cells]) for label, cells in rows]
    return "\n".join(out) + "\n"


def _csv(cols: list[int], rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["encoding", *cols])
    writer.writerows([label, *cells] for label, cells in rows)
    return buf.getvalue()


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _tex_cell(text: str) -> str:
    # Unicode ± and — need no package in math/text mode when written as LaTeX commands.
    return _tex_escape(text).replace("±", r"$\pm$").replace(MISSING, "---")


def _latex(cols: list[int], rows) -> str:
    # booktabs rules: the usual look for a paper's results table (\usepackage{booktabs}).
    out = [
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        " & ".join(["encoding", *map(str, cols)]) + r" \\",
        r"\midrule",
    ]
    out += [" & ".join([_tex_escape(label), *map(_tex_cell, cells)]) + r" \\" for label, cells in rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def perplexity_table(
    paths: Iterable[str | Path], lengths: Sequence | None = None, fmt: str = "md", protocol: str = "nonoverlapping"
) -> str:
    """Rows: labels (encodings); columns: evaluation lengths (default: every evaluated length)."""
    choose("table format", fmt, FORMATS)
    cols, rows = table_cells(paths, lengths, protocol)
    return {"md": _md, "csv": _csv, "latex": _latex}[fmt](cols, rows)


def write_table(
    paths: Iterable[str | Path],
    out: str | Path,
    lengths: Sequence | None = None,
    fmt: str | None = None,
    protocol: str = "nonoverlapping",
) -> Path:
    """Write perplexity_table to ``out`` atomically; ``fmt`` defaults from the suffix (.md, .csv, .tex)."""
    out = Path(out)
    if fmt is None:
        fmt = _SUFFIX_FORMAT.get(out.suffix.lower())
        if fmt is None:
            raise UserError(
                f"cannot tell the table format from '{out}'; use a .md, .csv or .tex file name "
                "or pass a format (md, csv, latex)"
            )
    text = perplexity_table(paths, lengths=lengths, fmt=fmt, protocol=protocol)
    atomic_write_text(out, text)  # readers see the old table or the new one, never half of one
    return out
