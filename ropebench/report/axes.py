"""What a figure's axes and legend say: the unit of the numbers (per byte, or per token of a named tokenizer, read
from the rows' ``tokenizer`` column), the log scale, perplexity relative to the training length, and one legend
below the axes (so the plot keeps the figure's width, however long the labels)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ropebench.report.identity import show

BYTES = "bytes"  # the tokenizer column of byte-level rows (and of rows written before the column existed)


@dataclass(frozen=True)
class Units:
    """The unit of the rows' numbers: byte-level, or the tokens of these tokenizers."""

    tokenizers: tuple[str, ...]

    @property
    def per(self) -> str:
        if self.tokenizers == (BYTES,):
            return "per byte"
        if len(self.tokenizers) == 1:
            return f"per token ({show(self.tokenizers[0])})"
        return "per byte or token: mixed units"

    @property
    def length(self) -> str:
        """What an evaluation length counts."""
        return "bytes" if self.tokenizers == (BYTES,) else "tokens"

    def value_label(self, what: str = "perplexity", log: bool = True) -> str:
        return f"{what} {self.per}" + (" (log scale)" if log else "")

    def length_label(self, log: bool = True) -> str:
        return f"evaluation length ({self.length}{', log scale' if log else ''})"


def units(rows: list[dict]) -> Units:
    """The rows' unit; rows of several tokenizers get a warning, since their perplexities are not comparable."""
    found = tuple(sorted({str(r.get("tokenizer") or BYTES) for r in rows})) or (BYTES,)
    if len(found) > 1:
        print(f"warning: the results were tokenized differently ({', '.join(map(show, found))}): perplexities per "
              "byte and per token of different tokenizers are not comparable", file=sys.stderr)
    return Units(found)


def relative_to_train_length(rows: list[dict], value: str = "ppl") -> list[dict]:
    """Each row with ``{value}_rel``: its value divided by the same run's value at its training length (same
    series: scaling, protocol, stride rule), so that curves start at 1 and show what longer inputs cost. A run not
    evaluated at its training length gets None, with one warning naming it."""
    at_train = {(r["series"], r["run_dir"]): r[value] for r in rows
                if r["eval_len"] == r.get("train_seq_len") and r["status"] == "ok" and r[value] is not None}
    missing = sorted({str(r["run_dir"]) for r in rows if (r["series"], r["run_dir"]) not in at_train})
    if missing:
        print(f"warning: not evaluated at its training length, so left out of --relative: {', '.join(missing)}",
              file=sys.stderr)
    out = []
    for r in rows:
        reference = at_train.get((r["series"], r["run_dir"]))
        ok = reference is not None and r[value] is not None
        out.append({**r, f"{value}_rel": r[value] / reference if ok else None})
    return out


def legend_below(fig, handles: list, grow: bool = True, fontsize: float = 8) -> None:
    """One legend for the whole figure, below its axes, in as many columns as the longest label leaves room for
    (the figure must use the constrained layout, which makes room for it). ``grow``: the figure grows by the
    legend's height, so that many series never squeeze the axes (off when the user chose the size)."""
    if not handles:
        return
    longest = max(len(h.get_label()) for h in handles)
    width_pt = fig.get_figwidth() * 72
    entry_pt = 34 + 0.55 * fontsize * longest  # the line sample and its padding, then the text
    ncols = max(1, min(len(handles), 4, int(width_pt // entry_pt)))
    if grow:
        rows = -(-len(handles) // ncols)
        fig.set_figheight(fig.get_figheight() + rows * 1.45 * fontsize / 72)
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False, fontsize=fontsize)
