"""Passkey retrieval scoring: exact-match accuracy of the 5 greedily decoded digits by length and key depth,
and the effective context as PI (Chen et al., arXiv 2306.15595: >= 20%) and YaRN (Peng et al.,
arXiv 2309.00071: >= 80%) define it.

This is the passkey task of the retrieval probes: its sequences are ``ropebench.data.probes``' (the sentences of
``ropebench.data.passkey``, in the run's own tokens), decoded by the probes' greedy scorer
(``ropebench.eval.probes.greedy_exact``); the loop around one length (config, model, scaling, statuses, the merge
after every length) is ``ropebench.eval.runner``'s. `ropebench probe --task passkey` adds likelihood scoring.
"""

from __future__ import annotations

import math

import torch

from ropebench.data.passkey import check_depth, check_length
from ropebench.data.probes import passkey_trials
from ropebench.errors import UserError
from ropebench.eval import probes
from ropebench.eval.probes import check_lengths, greedy_exact
from ropebench.eval.runner import AS_TRAINED, Probe, Session, Table, missing_cells, run_probe
from ropebench.progress import console
from ropebench.run.rundir import PASSKEY_CSV, RunDir

CSV_NAME = PASSKEY_CSV
THRESHOLDS = {"pi": 0.2, "yarn": 0.8}  # effective context as PI (>= 20%) and YaRN (>= 80%) define it
DEFINED_BY = {"pi": "PI", "yarn": "YaRN"}  # how the papers write their names
COLUMNS = ("pe", "train_seq_len", "eval_len", "depth", "rope_scaling", "rope_factor", "rope_scale", "logit_scale",
           "trials", "correct", "accuracy", "status")
KEY = ("eval_len", "depth", "rope_scaling", "logit_scale")
PASSKEY_TABLE = Table(PASSKEY_CSV, COLUMNS, KEY, ("rope_scaling", "logit_scale", "eval_len", "depth"))
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_MULTIPLES = (1, 2, 4, 8)


def parse_depths(text: str | None) -> list[float]:
    return probes.parse_depths(text, "passkey", DEFAULT_DEPTHS)


@torch.no_grad()
def count_correct(session: Session, length: int, depth: float, trials: int, batch_tokens: int) -> int:
    """How many of ``trials`` passkey sequences decode greedily to their key, every digit exact."""
    cell = passkey_trials(session.encoder(), length, depth, trials, candidates=1)
    return sum(greedy_exact(session, cell, length, batch_tokens))


class PasskeyProbe(Probe):
    """Accuracy at one length, one row per depth: the passkey task of the retrieval probes
    (``ropebench.eval.probes``), greedy scoring only. Dynamic NTK follows the current input while decoding
    (length - 4 to length - 1 tokens); ``rope_scale`` records it at the length."""

    table = PASSKEY_TABLE
    label = "passkey"

    def __init__(self, depths=DEFAULT_DEPTHS, trials: int = 32, batch_tokens: int = 16384):
        self.depths, self.trials, self.batch_tokens = list(depths), trials, batch_tokens

    def cells(self, length: int) -> list[dict]:
        return [{"depth": depth, "trials": self.trials, "correct": "", "accuracy": ""} for depth in self.depths]

    def measure(self, session: Session, length: int, rows: list[dict], meter) -> list[tuple[Table, list]]:
        meter.total(len(rows))
        for row in rows:
            correct = count_correct(session, length, row["depth"], self.trials, self.batch_tokens)
            row.update(correct=correct, accuracy=correct / self.trials, status="ok")
            meter.advance()
        return []

    def summary(self, rows: list[dict]) -> str:
        return f"accuracy {sum(r['accuracy'] for r in rows) / len(rows):.3f} over {len(rows)} depth(s)"


def _checked(cfg, lengths, depths, trials: int) -> tuple[list[int], list[float]]:
    """Every argument checked before any work, so a bad value never leaves half a result."""
    if str(cfg.data.source) == "task":  # its vocabulary holds no bytes to write a passkey prompt in
        raise UserError("passkey measures byte-level runs; this run was trained on a task (measure it with "
                        "`ropebench eval-task`)")
    train_len = int(cfg.train.seq_len)
    lengths = sorted(set(lengths or cfg.eval.get("lengths") or [m * train_len for m in DEFAULT_MULTIPLES]))
    if str(cfg.data.get("tokenizer", "bytes")) == "bytes":  # other tokenizers: check_lengths, in their tokens
        for length in lengths:
            check_length(length)
    depths = sorted({check_depth(d) for d in (DEFAULT_DEPTHS if depths is None else depths)})
    if not depths:
        raise UserError("no passkey depths given; use fractions such as 0,0.25,0.5,0.75,1")
    if trials <= 0:
        raise UserError(f"passkey trials must be a positive integer, got {trials}")
    return lengths, depths


def passkey_cells(cfg) -> dict:
    """The depths and trials a run's after-training passkey measurement uses: the task's defaults for data=passkey
    runs, ``eval.passkey_depths`` / ``eval.passkey_trials`` for a text run measured with ``eval.passkey``."""
    if cfg.data.source == "passkey" or not cfg.eval.get("passkey"):
        return {}
    return {"depths": [float(d) for d in cfg.eval.passkey_depths], "trials": int(cfg.eval.passkey_trials)}


def passkey_accuracy(run_dir, lengths: list[int] | None = None, depths: list[float] | None = None,
                     trials: int = 32, rope_scaling: dict | str | None = AS_TRAINED, device: str | None = None,
                     batch_tokens: int = 16384, log=None, model=None, only_missing: bool = False,
                     logit_scale: str = AS_TRAINED) -> list[dict]:
    """Exact-match passkey accuracy of a finished run at each (length, depth), default 1x, 2x, 4x, 8x the
    training length (or ``eval.lengths``) at 5 depths; merged into RUN/passkey.csv. RoPE scaling and the logit
    scale are resolved per length as in eval-length (default: as the run was trained). ``only_missing``: only the
    cells that have no result yet for this scaling."""
    session = Session(run_dir, log or console.print)
    lengths, depths = _checked(session.cfg, lengths, depths, trials)
    check_lengths(session.encoder(), ["passkey"], lengths, depths, trials, 1)  # a run with a tokenizer's tokens
    probe = PasskeyProbe(depths, trials, batch_tokens)
    return run_probe(probe, session, lengths, rope_scaling, only_missing, device, model, logit_scale)


def missing_passkey_cells(run_dir, lengths: list[int] | None = None,
                          depths: list[float] | None = None) -> list[tuple[int, float]]:
    """The wanted (length, depth) cells (default as ``passkey_accuracy``) that have no row in RUN/passkey.csv
    under the run's own (trained) scaling; a row that records an error counts as missing."""
    run = RunDir(run_dir)
    lengths, depths = _checked(run.read_config(), lengths, depths, 1)
    missing = missing_cells(run, PasskeyProbe(depths), lengths)
    return [(length, cell["depth"]) for length, cells in missing.items() for cell in cells]


def effective_context(rows: list[dict], threshold: float) -> int | None:
    """Longest evaluated L such that at every evaluated length <= L the accuracy averaged over depths is
    >= threshold (PI: 0.2, YaRN: 0.8); None when even the shortest fails. Rows of one run and one scaling.
    A length that could not be evaluated (not applicable, error) counts as a failure."""
    if not 0 < threshold <= 1:
        raise UserError(f"effective-context threshold must be in (0, 1], got {threshold}")
    by_len: dict[int, list[float]] = {}
    for r in rows:
        acc = r.get("accuracy")
        ok = r.get("status") == "ok" and acc not in ("", None) and math.isfinite(float(acc))
        by_len.setdefault(int(r["eval_len"]), []).append(float(acc) if ok else math.nan)
    best = None
    for length in sorted(by_len):
        accs = by_len[length]
        if any(math.isnan(a) for a in accs) or sum(accs) / len(accs) < threshold:
            break
        best = length
    return best


def effective_contexts(rows: list[dict]) -> dict[str, dict[str, int | None]]:
    """Per rope_scaling label (with "+scale" when a logit scale was applied): {"pi": L, "yarn": L}."""
    def label(row):
        scale = str(row.get("logit_scale") or "none")
        return str(row["rope_scaling"]) + ("" if scale == "none" else f"+{scale}")

    labels = sorted({label(r) for r in rows})
    return {name: {kind: effective_context([r for r in rows if label(r) == name], t)
                   for kind, t in THRESHOLDS.items()} for name in labels}
