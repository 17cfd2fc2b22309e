"""Perplexity beyond the training length, on validation documents, with the two standard protocols.

* ``nonoverlapping`` (Press et al., ALiBi, arXiv 2108.12409, main tables): each document is cut into
  consecutive windows of L tokens and every token is scored. When L does not divide the document's targets, a
  last window ending at the document's end scores only the targets not yet scored, with the tokens before them
  as context (it starts L tokens before the end), so no target is dropped.
* ``sliding`` with stride S (the ALiBi appendix; Chen et al., PI, arXiv 2306.15595): windows of L tokens moved
  by S; the first window of a document scores all its tokens, every later one only its last S (a final window
  ending at the document's end picks up the rest), so every scored token after the first window sees at least
  L - S tokens of context.

Negative log-likelihood is averaged per token, never per window. A length L uses validation documents with
at least L + 1 tokens (L inputs plus the target of the last one); when none has that many the row says so.

So that every length scores the same text, each document contributes the same region: its first
R = max(L, eval.region_multiple x training length) tokens (R = 16 x L_train by default, the longest default
length; ``eval.region_len`` sets it in tokens, so runs trained at different lengths score the same text).
Both protocols score every target of every region exactly once, so all lengths up to R score exactly
the same targets of the same documents (the same n_tokens), chunked differently; the token budget
(``eval.max_tokens``) is spent on whole regions: the first ceil(max_tokens / R) documents in a fixed
pseudo-random order, so every length up to R sees exactly the same documents.

The loop around one length (config, model, scaling, statuses, the merge after every length) is
``ropebench.eval.runner``'s; this module only scores windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ropebench.errors import UserError, choose
from ropebench.eval.lengths import run_lengths
from ropebench.eval.runner import AS_TRAINED, Probe, Session, Table, missing_cells, run_probe
from ropebench.progress import console
from ropebench.run.rundir import EVAL_CSV, POSITIONS_CSV, RunDir

PROTOCOLS = ("nonoverlapping", "sliding")
COLUMNS = ("pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling", "rope_factor", "rope_scale",
           "logit_scale", "ppl", "nll", "n_tokens", "n_windows", "n_documents", "status", "tokenizer", "model")
POSITION_COLUMNS = ("pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling", "logit_scale",
                    "position_start", "position_end", "mean_nll", "n_tokens")
KEY = ("eval_len", "protocol", "stride", "rope_scaling", "logit_scale")
_ORDER = ("rope_scaling", "logit_scale", "protocol", "eval_len", "stride")
EVAL_TABLE = Table(EVAL_CSV, COLUMNS, KEY, _ORDER)
POSITIONS_TABLE = Table(POSITIONS_CSV, POSITION_COLUMNS, (*KEY, "position_start"), (*_ORDER, "position_start"))


@dataclass(frozen=True)
class Window:
    start: int  # index of the first input token in the token stream
    n_score: int  # how many of the window's last targets are scored
    doc: int  # which document (index into the spans given)


def make_windows(docs, length: int, protocol: str, stride: int) -> list[Window]:
    """Windows of ``length`` inputs over document spans [start, end); every target of a span that has at least
    ``length`` targets is scored exactly once, whatever the protocol."""
    step = length if protocol == "nonoverlapping" else stride  # nonoverlapping ignores any stride given
    windows = []
    for doc, (start, end) in enumerate(docs):
        last_target = end - 1  # targets are tokens start+1 .. end-1
        if last_target - start < length:
            continue
        s, covered = start, start  # covered: last target scored so far
        while s + length <= last_target:
            n = length if s == start else min(step, s + length - covered)
            windows.append(Window(s, n, doc))
            covered = s + length
            s += step
        if covered < last_target:  # the tail: a window ending at the span's end scores what is left
            windows.append(Window(last_target - length, last_target - covered, doc))
    return windows


@torch.no_grad()
def score_windows(model, tokens, windows: list[Window], length: int, batch_size: int, device, buckets: int,
                  on_batch=lambda n: None):
    """Total NLL and token count over the scored targets, plus per-position-bucket edges and sums."""
    edges = torch.linspace(0, length, buckets + 1).long()
    bucket_of = torch.bucketize(torch.arange(length), edges[1:], right=True).to(device)
    bucket_nll = torch.zeros(buckets, dtype=torch.float64, device=device)
    bucket_n = torch.zeros(buckets, dtype=torch.float64, device=device)
    total, count = 0.0, 0
    position = torch.arange(length, device=device)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        rows = torch.stack([torch.from_numpy(tokens[w.start : w.start + length + 1].astype("int64")) for w in chunk])
        rows = rows.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, nll = model(rows[:, :-1], rows[:, 1:], reduction="none")
        n_score = torch.tensor([w.n_score for w in chunk], device=device)
        mask = position[None, :] >= (length - n_score)[:, None]
        nll = nll.double() * mask
        total += nll.sum().item()
        count += int(mask.sum())
        bucket_nll.index_add_(0, bucket_of, nll.sum(0))
        bucket_n.index_add_(0, bucket_of, mask.double().sum(0))
        on_batch(len(chunk))
    return total, count, edges.tolist(), bucket_nll.tolist(), bucket_n.tolist()


class PerplexityProbe(Probe):
    """Perplexity at one length and protocol; also the mean loss by position bucket (eval_positions.csv)."""

    table = EVAL_TABLE
    label = "eval"

    def __init__(self, protocol: str = "nonoverlapping", stride: int | None = None, max_tokens: int = 0,
                 batch_tokens: int = 8192, buckets: int = 32, region_multiple: float = 16, region_len: int = 0):
        self.protocol, self.stride, self.max_tokens = protocol, stride, max_tokens
        self.batch_tokens, self.buckets, self.region_multiple = batch_tokens, buckets, region_multiple
        self.region_len = region_len
        self.corpus = None
        self.tokenizer = "bytes"  # what ppl is per: a byte, or a token of this tokenizer (data.tokenizer)

    def step(self, length: int) -> int:
        return length if self.protocol == "nonoverlapping" else (self.stride or max(1, length // 2))

    def cells(self, length: int) -> list[dict]:
        return [{"protocol": self.protocol, "stride": self.step(length), "ppl": "", "nll": "", "n_tokens": 0,
                 "n_windows": 0, "n_documents": 0, "tokenizer": self.tokenizer}]

    def prepare(self, session: Session) -> None:
        from ropebench.data import load_corpus

        self.corpus = load_corpus(session.cfg.data, log=session.log)

    def documents(self, session: Session, length: int) -> list[tuple[int, int]]:
        """The spans scored at ``length``: whole regions of the first documents long enough for them."""
        region = max(length, self.region_len or int(self.region_multiple * session.train_len))
        val = self.corpus.val
        docs = val.documents(min_len=region + 1) or val.documents(min_len=length + 1)
        if self.max_tokens:  # whole regions: the same documents at every length up to the region
            docs = docs[: math.ceil(self.max_tokens / region)]
        return [(start, min(end, start + region + 1)) for start, end in docs]

    def unavailable(self, session: Session, length: int) -> str | None:
        if self.documents(session, length):
            return None
        longest = int(self.corpus.val.doc_lengths().max())
        return f"no_document: no validation document has {length + 1} tokens (longest has {longest})"

    def measure(self, session: Session, length: int, rows: list[dict], meter) -> list[tuple[Table, list]]:
        row = rows[0]
        windows = make_windows(self.documents(session, length), length, self.protocol, row["stride"])
        meter.total(len(windows))
        total, count, edges, bucket_nll, bucket_n = score_windows(
            session.model, self.corpus.val.tokens, windows, length, max(1, self.batch_tokens // length),
            session.device, min(self.buckets, length), on_batch=meter.advance)
        nll = total / count
        row.update(nll=nll, ppl=math.exp(nll), n_tokens=count, n_windows=len(windows),
                   n_documents=len({w.doc for w in windows}), status="ok")
        shared = {k: row[k] for k in ("pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling",
                                      "logit_scale")}
        positions = [{**shared, "position_start": edges[i], "position_end": edges[i + 1],
                      "mean_nll": bucket_nll[i] / bucket_n[i], "n_tokens": int(bucket_n[i])}
                     for i in range(len(bucket_n)) if bucket_n[i]]
        return [(POSITIONS_TABLE, positions)]

    def summary(self, rows: list[dict]) -> str:
        return f"ppl {rows[0]['ppl']:.3f} over {rows[0]['n_tokens']} tokens"


def checked_probe(cfg, lengths: list[int], protocol: str, stride: int | None, max_tokens: int | None,
                   batch_tokens: int, buckets: int) -> PerplexityProbe:
    """Every option checked before the model is loaded: a typo costs nothing and writes nothing."""
    choose("protocol", protocol, PROTOCOLS)
    if stride is not None:
        if protocol != "sliding":
            raise UserError("--stride applies to --protocol sliding only")
        if stride <= 0:
            raise UserError(f"stride must be a positive integer, got {stride}")
        if stride > min(lengths):
            raise UserError(f"stride {stride} is larger than evaluation length {min(lengths)}; use a stride <= it")
    if max_tokens is None:
        max_tokens = int(cfg.eval.max_tokens)
    if max_tokens < 0:
        raise UserError(f"tokens per length {max_tokens} (--max-tokens / eval.max_tokens) must be >= 0; "
                        "0 scores every token")
    if batch_tokens <= 0:
        raise UserError(f"batch_tokens must be a positive integer, got {batch_tokens}")
    return PerplexityProbe(protocol, stride, max_tokens, batch_tokens, buckets,
                           float(cfg.eval.get("region_multiple", 16)), int(cfg.eval.get("region_len", 0)))


def eval_length(run_dir, lengths: list[int] | None = None, protocol: str = "nonoverlapping",
                stride: int | None = None, rope_scaling: dict | str | None = AS_TRAINED, max_tokens: int | None = None,
                batch_tokens: int = 8192, device: str | None = None, model=None, buckets: int = 32,
                log=console.print, only_missing: bool = False, logit_scale: str = AS_TRAINED) -> list[dict]:
    """Evaluate a finished run at each length (default: ``eval.multiples`` x the training length); merge the
    rows into RUN/eval_length.csv and RUN/eval_positions.csv and return them. ``only_missing``: only the lengths
    that have no result yet for this protocol and scaling (a relaunch completes an interrupted evaluation);
    ``logit_scale``: none or logn at evaluation (default: the run's own, see ropebench.core.temperature)."""
    session = Session(run_dir, log)
    lengths = lengths or run_lengths(session.cfg)
    probe = checked_probe(session.cfg, lengths, protocol, stride, max_tokens, batch_tokens, buckets)
    probe.tokenizer = str(session.cfg.data.get("tokenizer", "bytes") or "bytes")  # configs before it: bytes
    return run_probe(probe, session, lengths, rope_scaling, only_missing, device, model, logit_scale)


def missing_lengths(run_dir, lengths: list[int] | None = None, protocol: str = "nonoverlapping",
                    stride: int | None = None) -> list[int]:
    """The wanted lengths (default: the run's evaluation lengths) that have no row for ``protocol`` under the
    run's own (trained) scaling in RUN/eval_length.csv; a row that records an error counts as missing."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    choose("protocol", protocol, PROTOCOLS)
    lengths = lengths or run_lengths(cfg)
    probe = PerplexityProbe(protocol, stride)
    return [length for length, cells in missing_cells(run, probe, lengths).items() if cells]
