"""Result tables (encodings x evaluation lengths) as Markdown, CSV or LaTeX.

``--metric`` picks what a cell holds: ``ppl`` (perplexity), ``gain`` (nll_gain: cropped minus full NLL, nats per
token; ropebench.eval.crop), ``gain_source`` (the same with the context cut to the length a fine-tuned run's source
was trained at), or one length per label, ``hold`` / ``use`` (ropebench.report.context). Cells read
``mean ± std`` (sample std over seeds) when a label has several seeds, else the value ``± its standard error over
documents`` when the rows hold one; ``n/a`` where the encoding cannot run at that length (learned positions beyond
max_len), ``—`` where nothing succeeded or nothing was evaluated.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ropebench.errors import UserError, choose
from ropebench.report import context
from ropebench.report.results import Point, aggregate, load_results, select
from ropebench.report.tokens import warn_few_documents, warn_unequal_tokens
from ropebench.run.rundir import atomic_write_text

FORMATS = ("md", "csv", "latex")
METRICS = ("ppl", "gain", "gain_source", "hold", "use")
_VALUE = {"ppl": "ppl", "gain": "nll_gain", "gain_source": "nll_gain_source"}
_ONE_LENGTH = {"hold": f"hold length (ppl within {context.HOLD_TOLERANCE:.0%} of L)",
               "use": "use length (gain > 2 SE)"}
_SUFFIX_FORMAT = {".md": "md", ".markdown": "md", ".csv": "csv", ".tex": "latex"}
NA = "n/a"
MISSING = "—"


def cell(point: Point | None, fmt: str = ".2f") -> str:
    if point is None or point.status == "missing":
        return MISSING
    if point.status == "n/a":
        return NA
    spread = point.std if point.n > 1 else point.se
    if point.n > 1 or spread == spread:  # NaN: one seed without a standard error
        return f"{point.mean:{fmt}} ± {spread:{fmt[1:] if fmt.startswith('+') else fmt}}"
    return f"{point.mean:{fmt}}"


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


def table_cells(paths: Iterable[str | Path], lengths: Sequence | None = None, protocol: str = "nonoverlapping",
                metric: str = "ppl", split: str | None = None,
                renames=None) -> tuple[list, list[tuple[str, list[str]]]]:
    """The table's columns and its rows as (label, cells), before any formatting; ``renames``: the user's
    names for series (identity.Renames)."""
    choose("table metric (--metric)", metric, METRICS)
    rows = select(load_results(paths, renames=renames), protocol, split)
    warn_unequal_tokens(rows)
    warn_few_documents(rows)
    if metric in _ONE_LENGTH:
        values = context.per_run(rows, metric)
        order = [s.label for s in aggregate(rows)]
        return [_ONE_LENGTH[metric]], [(label, [context.describe([v for _, v in values[label]])]) for label in order]
    series = aggregate(rows, _VALUE[metric])
    cols = _lengths(lengths, (n for s in series for n in s.points))
    fmt = "+.3f" if metric.startswith("gain") else ".2f"
    return cols, [(s.label, [cell(s.points.get(n), fmt) for n in cols]) for s in series]


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


def _latex(cols: list, rows, unit=None, title: str | None = None, best=min, across: str | None = None) -> str:
    r"""A booktabs table in a ``table`` float (\usepackage{booktabs}): a caption that says what the numbers are and
    in which unit (``unit``: report.axes.Units, from the rows' tokenizer column; ``title``: what they are, default
    perplexity), the columns under one header (``across``, default the evaluation length; "" for none), and the
    best mean of each column in bold (``best``: min or max; None for none)."""
    per, length = (unit.per, unit.length) if unit is not None else ("", "tokens")
    title = title or f"Perplexity {per} (lower is better) at each evaluation length, in {length}"
    across = f"evaluation length ({length})" if across is None else across
    top = [best(values) if best and (values := [v for v in map(_number, (c[i] for _, c in rows)) if v is not None])
           else None for i in range(len(cols))]
    body = [" & ".join([_tex_escape(label), *(_tex_bold(c) if top[i] is not None and _number(c) == top[i]
                                               else _tex_cell(c) for i, c in enumerate(cells))]) + r" \\"
            for label, cells in rows]
    caption = (_tex_escape(f"{title}: the mean over seeds") + r" $\pm$ " + "their sample standard deviation where an "
               "experiment has several." + (" The best in each column is in bold." if best else ""))
    header = ([rf" & \multicolumn{{{len(cols)}}}{{c}}{{{_tex_escape(across)}}} \\",
               rf"\cmidrule(l){{2-{len(cols) + 1}}}"] if across else [])
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{' '.join(caption.split())}}}", r"\label{tab:perplexity}",
           r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule", *header,
           " & ".join(["encoding", *(_tex_escape(str(c)) for c in cols)]) + r" \\", r"\midrule",
           *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def _number(text: str) -> float | None:
    """The leading number of a cell (its mean), or None for n/a and missing cells."""
    try:
        return float(str(text).split(" ")[0])
    except ValueError:
        return None


def _tex_bold(text: str) -> str:
    mean, _, rest = str(text).partition(" ")
    return rf"\textbf{{{_tex_escape(mean)}}}" + (" " + _tex_cell(rest) if rest else "")


def perplexity_table(
    paths: Iterable[str | Path], lengths: Sequence | None = None, fmt: str = "md", protocol: str = "nonoverlapping",
    metric: str = "ppl", split: str | None = None, renames=None,
) -> str:
    """Rows: labels (encodings); columns: evaluation lengths (default: every evaluated length), or one length
    per label for ``metric`` hold / use."""
    choose("table format", fmt, FORMATS)
    cols, rows = table_cells(paths, lengths, protocol, metric, split, renames)
    if fmt != "latex":
        return render_table(fmt, cols, rows)
    from ropebench.report.axes import units

    unit = units(select(load_results(paths), protocol, split))  # the caption names the unit of the numbers
    if metric in _ONE_LENGTH:
        return _latex(cols, rows, unit, f"{_ONE_LENGTH[metric]} per experiment", best=None, across="")
    if metric != "ppl":
        return _latex(cols, rows, unit, "Gain from the context past the training length (cropped minus full NLL, "
                      f"nats {unit.per}; higher is better) at each evaluation length, in {unit.length}", best=max)
    return _latex(cols, rows, unit)


def render_table(fmt: str, cols: list, rows, title: str | None = None, best=min) -> str:
    """Rows of (label, cells) under the columns ``cols`` as Markdown, CSV or LaTeX (``fmt``; ``title`` and
    ``best`` as ``_latex``'s)."""
    if choose("table format", fmt, FORMATS) == "latex":
        return _latex(cols, rows, title=title, best=best)
    return {"md": _md, "csv": _csv}[fmt](cols, rows)


def write_table(
    paths: Iterable[str | Path],
    out: str | Path,
    lengths: Sequence | None = None,
    fmt: str | None = None,
    protocol: str = "nonoverlapping",
    metric: str = "ppl",
    split: str | None = None,
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
    text = perplexity_table(paths, lengths=lengths, fmt=fmt, protocol=protocol, metric=metric, split=split)
    atomic_write_text(out, text)  # readers see the old table or the new one, never half of one
    return out


def format_table(cols: list, rows: list[tuple[str, list[str]]], fmt: str) -> str:
    """(label, cells) rows under the columns ``cols`` as Markdown, CSV or LaTeX (the probe table's formats)."""
    choose("table format", fmt, FORMATS)
    return {"md": _md, "csv": _csv, "latex": _latex}[fmt](cols, rows)
