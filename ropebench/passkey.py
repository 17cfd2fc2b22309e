"""Passkey retrieval (Mohtashami & Jaggi 2023; the test PI and YaRN report): a 5-digit key hidden in filler.

A sequence of L + 1 byte tokens is ``filler | key sentence | filler | question | 5 answer digits``: the key
sentence starts at ``round(depth x filler tokens)``, so depth 0 puts it first and depth 1 right before the
question. The answer digits are the last 5 tokens, i.e. the last 5 targets of a training window of L inputs.
``data=passkey`` trains on such sequences at the training length (depth uniform in [0, 1], loss on the 5
answer digits only -- see ``PasskeySplit.batch``); ``passkey_accuracy``
greedy-decodes the 5 digits at other lengths and depths and counts exact matches.

The wording is shorter than the papers' ("The pass key is 12345. Remember it. 12345 is the pass key." and
"What is the pass key? The pass key is") so that key, question and answer fit the CPU default training length
of 64 tokens with filler to spare; for a byte model trained from scratch the wording carries no meaning anyway.
Filler never contains digits or a newline, so the digits after the newline-led question can only come from
the key sentence: the model has to retrieve them, and the distance it retrieves over grows with the length.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ropebench import rundir
from ropebench.data import VOCAB_SIZE, Corpus
from ropebench.errors import UserError

FILLER = b"The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEY_PREFIX, KEY_SUFFIX = b"The pass key is ", b". "
QUESTION = b"\nThe pass key is "
N_DIGITS = 5
_DIGIT0 = ord("0")
IGNORE = -100  # torch.nn.functional.cross_entropy's default ignore_index
# Inputs L must hold key sentence + question + the first 4 answer digits (the 5th is only a target).
MIN_LEN = len(KEY_PREFIX) + N_DIGITS + len(KEY_SUFFIX) + len(QUESTION) + N_DIGITS - 1
THRESHOLDS = {"pi": 0.2, "yarn": 0.8}  # effective context as PI (>= 20%) and YaRN (>= 80%) define it
COLUMNS = ["pe", "train_seq_len", "eval_len", "depth", "rope_scaling", "trials", "correct", "accuracy", "status"]
KEY = ("eval_len", "depth", "rope_scaling")
CSV_NAME = "passkey.csv"
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_MULTIPLES = (1, 2, 4, 8)


def check_length(length: int, what: str = "passkey length") -> int:
    if length < MIN_LEN:
        raise UserError(f"{what} {length} is too short for the passkey task: key sentence, question and answer "
                        f"need at least {MIN_LEN} tokens; use {MIN_LEN} or more")
    return length


def check_depth(depth: float) -> float:
    if not (isinstance(depth, (int, float)) and 0.0 <= depth <= 1.0):  # NaN fails both comparisons
        raise UserError(f"passkey depth {depth} is outside [0, 1]; use fractions such as 0,0.25,0.5,0.75,1")
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


def sample_batch(batch_size: int, length: int, generator: torch.Generator, depths=None) -> torch.Tensor:
    """(B, length + 1) int64 sequences; random keys and filler phases, and depths uniform in [0, 1] unless given."""
    digits = torch.randint(10, (batch_size, N_DIGITS), generator=generator).tolist()
    phases = torch.randint(len(FILLER), (batch_size,), generator=generator).tolist()
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


def load_passkey_corpus(cfg) -> Corpus:
    """The ``data=passkey`` corpus: nothing to read or cache, sequences are generated from the torch generator."""
    info = {"name": cfg.name, "source": "passkey", "min_len": MIN_LEN, "digits": N_DIGITS,
            "filler": FILLER.decode(), "key": (KEY_PREFIX + b"NNNNN" + KEY_SUFFIX).decode(),
            "question": QUESTION.decode()}
    return Corpus(PasskeySplit("train"), PasskeySplit("val"), VOCAB_SIZE, info)


def parse_depths(text: str | None) -> list[float]:
    if not text:
        return list(DEFAULT_DEPTHS)
    depths = []
    for item in text.split(","):
        try:
            value = float(item.strip())
        except ValueError:
            raise UserError(f"passkey depth '{item.strip()}' is not a number; use fractions such as "
                            "0,0.25,0.5,0.75,1") from None
        depths.append(check_depth(value))
    return sorted(set(depths))


def _cell_generator(length: int, depth: float) -> torch.Generator:
    # Seeded by the cell alone: every run, scaling and re-run sees the same keys at (length, depth).
    return torch.Generator().manual_seed(zlib.crc32(f"passkey:{length}:{depth:.6f}".encode()))


@torch.no_grad()
def _count_correct(model, length: int, depth: float, trials: int, device, batch_tokens: int) -> int:
    rows = sample_batch(trials, length, _cell_generator(length, depth), depths=[depth] * trials)
    correct = 0
    for chunk in rows.split(max(1, batch_tokens // length)):
        ids = chunk[:, : length + 1 - N_DIGITS].to(device)
        for _ in range(N_DIGITS):  # greedy, teacher-free: each digit is the argmax given the digits generated
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits, _ = model(ids)
            ids = torch.cat([ids, logits[:, -1, :VOCAB_SIZE].argmax(-1, keepdim=True)], dim=1)
        answer = chunk[:, -N_DIGITS:].to(device)
        correct += int((ids[:, -N_DIGITS:] == answer).all(dim=1).sum())
    return correct


def passkey_accuracy(run_dir, lengths: list[int] | None = None, depths: list[float] | None = None,
                     trials: int = 32, rope_scaling: dict | None = None, device: str | None = None,
                     batch_tokens: int = 16384, log=None) -> list[dict]:
    """Exact-match passkey accuracy of a finished run at each (length, depth); merged into RUN/passkey.csv."""
    from ropebench.evaluate import _scaling_spec, merge_rows
    from ropebench.progress import console, progress_bar

    log = log or console.print
    run_dir = Path(run_dir)
    cfg = rundir.load_config(run_dir)
    train_len = int(cfg.train.seq_len)
    lengths = sorted(set(lengths or [m * train_len for m in DEFAULT_MULTIPLES]))
    depths = sorted({check_depth(d) for d in (DEFAULT_DEPTHS if depths is None else depths)})
    for length in lengths:  # all input checked before any work, so a bad value never leaves half a result
        check_length(length)
    if not depths:
        raise UserError("no passkey depths given; use fractions such as 0,0.25,0.5,0.75,1")
    if trials <= 0:
        raise UserError(f"passkey trials must be a positive integer, got {trials}")
    target = rundir.resolve_device(device or cfg.train.device)
    model, cfg = rundir.load_model(run_dir, target)
    if rope_scaling and not hasattr(model.pe, "set_scaling"):
        raise UserError(f"--rope-scaling needs a RoPE-family run; {run_dir} uses pe={cfg.pe.name}")
    limit = model.pe.max_len()
    all_rows = []
    try:
        with progress_bar() as bar:
            task = bar.add_task("passkey", total=len(lengths) * len(depths), rate="", info="")
            for length in lengths:
                spec, label, _ = _scaling_spec(rope_scaling, length, train_len)
                if spec is not None:
                    model.pe.set_scaling(spec)
                rows = []
                for depth in depths:
                    row = {"pe": cfg.pe.name, "train_seq_len": train_len, "eval_len": length, "depth": depth,
                           "rope_scaling": label, "trials": trials, "correct": "", "accuracy": ""}
                    if limit is not None and length > limit:
                        row["status"] = f"not_applicable: {cfg.pe.name} positions stop at max_len={limit}"
                    else:
                        bar.update(task, info=f"L={length} depth={depth:g} {label}")
                        try:
                            correct = _count_correct(model, length, depth, trials, target, batch_tokens)
                            row.update(correct=correct, accuracy=correct / trials, status="ok")
                        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory: record it, go on
                            row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    rows.append(row)
                    bar.advance(task)
                ok = [r["accuracy"] for r in rows if r["status"] == "ok"]
                log(f"  L={length:>6} {label:>8}: " + (f"accuracy {sum(ok) / len(ok):.3f} over depths"
                                                      if ok else rows[0]["status"]))
                # Written after every length: a later failure never loses what was computed.
                merge_rows(run_dir / CSV_NAME, rows, COLUMNS, key=KEY)
                all_rows += rows
    finally:
        if rope_scaling:
            model.pe.set_scaling(None)
    return all_rows


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
    """Per rope_scaling label: {"pi": L, "yarn": L}."""
    labels = sorted({str(r["rope_scaling"]) for r in rows})
    return {label: {name: effective_context([r for r in rows if str(r["rope_scaling"]) == label], t)
                    for name, t in THRESHOLDS.items()} for label in labels}
