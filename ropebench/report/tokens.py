"""Results shown side by side must be measured on the same tokens; a warning says where they are not.

Perplexities over different text are different quantities: a run re-evaluated with another ``--max-tokens`` at
one length, or two runs evaluated on different data, would otherwise sit in one table or one curve and look
comparable. ropebench's own evaluation scores the same tokens at every length up to 16x the training length
and, for every run on the same data, the same tokens at each length; these checks say where rows break that.
"""

from __future__ import annotations

from collections import defaultdict

#: Up to this multiple of the training length every length scores the same tokens (ropebench.eval.lengths).
SAME_TOKENS_UP_TO = 16


def _latest(rows: list[dict]) -> dict[tuple, dict]:
    """The last row per (label, run, length), as aggregate() counts them, if it shows a perplexity and says how
    many tokens it scored."""
    latest = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("ppl") is not None and r.get("n_tokens"):
            latest[(r["label"], r["run_dir"], r["eval_len"])] = r
    return latest


def _counts(values) -> str:
    return "/".join(f"{v:,}" for v in sorted(set(values)))


def unequal_token_warnings(rows: list[dict]) -> list[str]:
    """One line per problem: lengths where the results scored different numbers of tokens, and runs whose
    lengths up to 16x their training length did."""
    latest = _latest(rows)
    by_length: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    by_run: dict[tuple, dict[int, int]] = defaultdict(dict)
    for (label, run, length), r in latest.items():
        by_length[length][label].append(r["n_tokens"])
        if r.get("train_seq_len") and length <= SAME_TOKENS_UP_TO * r["train_seq_len"]:
            by_run[(run, label)][length] = r["n_tokens"]
    warnings = []
    across = {n: labels for n, labels in sorted(by_length.items())
              if len({c for counts in labels.values() for c in counts}) > 1}
    if across:
        n, labels = next(iter(across.items()))
        detail = "; ".join(f"{label} {_counts(counts)}" for label, counts in labels.items())
        warnings.append(f"the results scored different numbers of tokens at length{'s' * (len(across) > 1)} "
                        f"{', '.join(map(str, across))} (at {n}: {detail}), so their perplexities are not on the "
                        "same text; evaluate them on the same data with the same --max-tokens")
    for (run, label), counts in by_run.items():
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{n}: {c:,}" for n, c in sorted(counts.items()))
            warnings.append(f"'{run}' ({label}) scored different numbers of tokens at its lengths up to "
                            f"{SAME_TOKENS_UP_TO}x training ({detail}), so its curve mixes texts; re-evaluate "
                            "those lengths with one --max-tokens")
    return warnings


def warn_unequal_tokens(rows: list[dict]) -> None:
    """Each of unequal_token_warnings as a "warning:" line on stderr; the table or figure is still made."""
    import sys

    for line in unequal_token_warnings(rows):
        print(f"warning: {line}", file=sys.stderr)


#: A length whose number rests on fewer held-out documents than this gets a warning: its mean moves with a few
#: documents' topics, whatever its standard error says.
MIN_DOCUMENTS = 20


def few_document_warnings(rows: list[dict]) -> list[str]:
    """One line naming the lengths whose results rest on fewer than MIN_DOCUMENTS documents."""
    few: dict[int, int] = {}
    for r in _latest(rows).values():
        n = r.get("n_documents")
        if n is not None and n < MIN_DOCUMENTS:
            few[r["eval_len"]] = min(few.get(r["eval_len"], n), n)
    if not few:
        return []
    detail = ", ".join(f"{length} ({n})" for length, n in sorted(few.items()))
    return [f"some results rest on fewer than {MIN_DOCUMENTS} documents (length (documents): {detail}); their "
            "means move with a few documents' topics -- read them with their standard errors"]


def warn_few_documents(rows: list[dict]) -> None:
    import sys

    for line in few_document_warnings(rows):
        print(f"warning: {line}", file=sys.stderr)
