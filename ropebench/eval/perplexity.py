"""Perplexity beyond the training length, on held-out documents, with the two standard protocols.

* ``nonoverlapping`` (Press et al., ALiBi, arXiv 2108.12409, main tables): each document is cut into
  consecutive windows of L tokens and every token is scored. When L does not divide the document's targets, a
  last window ending at the document's end scores only the targets not yet scored, with the tokens before them
  as context (it starts L tokens before the end), so no target is dropped.
* ``sliding`` with stride S (the ALiBi appendix; Chen et al., PI, arXiv 2306.15595): windows of L tokens moved
  by S; the first window of a document scores all its tokens, every later one only its last S (a final window
  ending at the document's end picks up the rest), so every scored token after the first window sees at least
  L - S tokens of context.

Negative log-likelihood is averaged per token, never per window, with its standard error over documents
(``nll_se``). A length L uses held-out documents -- the test split by default (``eval.split``), validation when
choosing settings -- with at least L + 1 tokens; when none has that many the row says so.

So that every length scores the same text, each document contributes the same region
(``ropebench.data.regions``): R + 1 tokens at a fixed pseudo-random offset, R = max(L, eval.region_multiple x
training length) (16 x L_train by default, the longest default length; ``eval.region_len`` sets it in tokens, so
runs trained at different lengths score the same text). Both protocols score every target of every region
exactly once, so all lengths up to R score exactly the same targets of the same documents (the same
n_tokens), chunked differently; the token budget (``eval.max_tokens``) is spent on whole regions.

Beside every length past the training length, the cropped baseline (``eval.crop``, on by default; see
``ropebench.eval.crop``) scores the same targets with their context cut to about the training length:
``ppl_crop``, and ``nll_gain`` with its standard error ``gain_se``.

The loop around one length (config, model, scaling, statuses, the merge after every length) is
``ropebench.eval.runner``'s; this module only scores windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ropebench.data.corpus import HELD_OUT, test_fraction
from ropebench.data.regions import region_spans
from ropebench.errors import UserError, choose
from ropebench.eval.crop import SAMPLE_EVERY, checked_sample, clustered_se, crop_gain, crop_stride, crop_windows
from ropebench.eval.lengths import run_lengths
from ropebench.eval.runner import AS_TRAINED, Probe, Session, Table, missing_cells, run_probe
from ropebench.progress import console
from ropebench.run.rundir import EVAL_CSV, POSITIONS_CSV, RunDir

PROTOCOLS = ("nonoverlapping", "sliding")
COLUMNS = ("pe", "train_seq_len", "eval_len", "split", "protocol", "stride", "rope_scaling", "rope_factor",
           "rope_scale", "logit_scale", "ppl", "nll", "nll_se", "ppl_crop", "nll_crop", "nll_gain", "gain_se",
           "crop_stride", "crop_sample", "ppl_crop_source", "nll_gain_source", "gain_se_source", "n_tokens",
           "n_windows", "n_documents", "status", "tokenizer", "model")
POSITION_COLUMNS = ("pe", "train_seq_len", "eval_len", "split", "protocol", "stride", "rope_scaling",
                    "logit_scale", "position_start", "position_end", "mean_nll", "n_tokens")
KEY = ("eval_len", "split", "protocol", "stride", "rope_scaling", "logit_scale")
_ORDER = ("split", "rope_scaling", "logit_scale", "protocol", "eval_len", "stride")
# Rows written before the test split existed scored validation documents (and before the logit_scale column, none:
# every Table's defaults).
_BEFORE_SPLITS = {"split": "val"}
EVAL_TABLE = Table(EVAL_CSV, COLUMNS, KEY, _ORDER, _BEFORE_SPLITS)
POSITIONS_TABLE = Table(POSITIONS_CSV, POSITION_COLUMNS, (*KEY, "position_start"), (*_ORDER, "position_start"),
                        _BEFORE_SPLITS)


@dataclass(frozen=True)
class Window:
    start: int  # index of the first input token in the token stream
    n_score: int  # how many of the window's last targets are scored
    doc: int  # which document (index into the spans given)
    weight: float = 1.0  # what each scored target stands for (a sampled crop chunk stands for several)


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


@dataclass
class Scores:
    """Summed NLL and token counts over scored targets: in all, per document (index of the spans), per bucket of
    window positions; with ``keep_targets``, also each scored target (its index in the token stream, NLL, document
    and weight), which the cropped baseline pairs with the full evaluation's."""

    total: float
    count: int
    doc_nll: list[float]
    doc_n: list[float]
    edges: list[int]
    bucket_nll: list[float]
    bucket_n: list[float]
    targets: np.ndarray | None = None
    target_nll: np.ndarray | None = None
    target_doc: np.ndarray | None = None
    target_weight: np.ndarray | None = None

    @property
    def nll(self) -> float:
        return self.total / self.count

    @property
    def se(self) -> float:
        return clustered_se(self.doc_nll, self.doc_n)


@torch.no_grad()
def score_windows(model, tokens, windows: list[Window], length: int, batch_size: int, device, buckets: int,
                  n_docs: int = 0, on_batch=lambda n: None, keep_targets: bool = False) -> Scores:
    """Sum the NLL of every window's last ``n_score`` targets (``length`` inputs each), ``batch_size`` windows
    per forward pass; ``keep_targets``: also return each scored target (see ``Scores``)."""
    edges = torch.linspace(0, length, buckets + 1).long()
    bucket_of = torch.bucketize(torch.arange(length), edges[1:], right=True).to(device)
    sums = torch.zeros(2, buckets, dtype=torch.float64, device=device)  # per bucket: nll, count
    n_docs = max(n_docs, 1 + max((w.doc for w in windows), default=0))
    per_doc = torch.zeros(2, n_docs, dtype=torch.float64, device=device)  # per document: nll, count
    position = torch.arange(length, device=device)
    kept = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        rows = torch.stack([torch.from_numpy(tokens[w.start : w.start + length + 1].astype("int64")) for w in chunk])
        rows = rows.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, nll = model(rows[:, :-1], rows[:, 1:], reduction="none")
        n_score = torch.tensor([w.n_score for w in chunk], device=device)
        mask = (position[None, :] >= (length - n_score)[:, None]).double()
        nll = nll.double() * mask
        sums[0].index_add_(0, bucket_of, nll.sum(0))
        sums[1].index_add_(0, bucket_of, mask.sum(0))
        doc = torch.tensor([w.doc for w in chunk], device=device)
        per_doc[0].index_add_(0, doc, nll.sum(1))
        per_doc[1].index_add_(0, doc, mask.sum(1))
        if keep_targets:
            kept.append(_scored_targets(chunk, nll, mask.bool(), doc, position))
        on_batch(len(chunk))
    (bucket_nll, bucket_n), (doc_nll, doc_n) = sums.tolist(), per_doc.tolist()
    scores = Scores(sum(doc_nll), int(round(sum(doc_n))), doc_nll, doc_n, edges.tolist(), bucket_nll, bucket_n)
    if keep_targets:
        scores.targets, scores.target_nll, scores.target_doc, scores.target_weight = (
            np.concatenate([k[i] for k in kept]) if kept else np.zeros(0, np.int64) for i in range(4))
    return scores


def _scored_targets(chunk: list[Window], nll, mask, doc, position) -> tuple[np.ndarray, ...]:
    """The scored targets of one batch: stream index, NLL, document and weight of each."""
    start = torch.tensor([w.start for w in chunk], device=nll.device)
    weight = torch.tensor([w.weight for w in chunk], dtype=torch.float64, device=nll.device)
    stream = start[:, None] + 1 + position[None, :]  # target j of a window is the token after input j
    columns = (stream, nll, doc[:, None].expand_as(stream), weight[:, None].expand_as(nll))
    return tuple(c[mask].cpu().numpy() for c in columns)


class PerplexityProbe(Probe):
    """Perplexity at one length and protocol, and with ``crop`` the cropped baseline beside it (see
    ropebench/eval/crop.py); also the mean loss by position bucket (eval_positions.csv)."""

    table = EVAL_TABLE
    label = "eval"

    def __init__(self, protocol: str = "nonoverlapping", stride: int | None = None, max_tokens: int = 0,
                 batch_tokens: int = 8192, buckets: int = 32, region_multiple: float = 16, region_len: int = 0,
                 split: str = "test", crop: bool = False, crop_stride: int = 0, crop_sample: int = SAMPLE_EVERY):
        self.protocol, self.stride, self.max_tokens = protocol, stride, max_tokens
        self.batch_tokens, self.buckets, self.region_multiple = batch_tokens, buckets, region_multiple
        self.region_len, self.split, self.crop, self.crop_stride = region_len, split, crop, crop_stride
        self.crop_sample = crop_sample
        self.corpus = None
        self.tokenizer = "bytes"  # what ppl is per: a byte, or a token of this tokenizer (data.tokenizer)

    def step(self, length: int) -> int:
        return length if self.protocol == "nonoverlapping" else (self.stride or max(1, length // 2))

    def cells(self, length: int) -> list[dict]:
        return [{"split": self.split, "protocol": self.protocol, "stride": self.step(length), "ppl": "", "nll": "",
                 "n_tokens": 0, "n_windows": 0, "n_documents": 0, "tokenizer": self.tokenizer}]

    def complete(self, row: dict, train_len: int) -> bool:
        """A row asked for with the crop needs its crop columns, cut as asked (a row from an evaluation without
        the crop, or with another crop stride or sample, does not count as done)."""
        if not self.crop or int(float(row["eval_len"])) <= train_len:
            return True
        if row.get("nll_gain", "") == "":
            return False
        as_asked = (self._crop_stride(train_len), self.crop_sample)
        return (_as_int(row.get("crop_stride")), _as_int(row.get("crop_sample"), 1)) == as_asked

    def prepare(self, session: Session) -> None:
        from ropebench.data import load_corpus

        self.corpus = load_corpus(session.cfg.data, log=session.log)
        self.corpus.held_out(self.split)  # a run without a test split is refused before any length is scored

    def documents(self, session: Session, length: int) -> list[tuple[int, int]]:
        """The spans scored at ``length`` (``ropebench.data.regions``): the same regions at every length up to
        the region length; with ``region_len`` -1 (text given by path), every document longer than ``length``,
        whole, within the token budget."""
        held_out = self.corpus.held_out(self.split)
        if self.region_len < 0:
            docs = held_out.documents(min_len=length + 1)
            budget = np.cumsum([end - start - 1 for start, end in docs])
            return docs[: int(np.searchsorted(budget, self.max_tokens)) + 1] if self.max_tokens else docs
        region = self.region_len or int(self.region_multiple * session.train_len)
        return region_spans(held_out, (self.corpus.names or {}).get(self.split), length, region, self.max_tokens)

    def unavailable(self, session: Session, length: int) -> str | None:
        if self.documents(session, length):
            return None
        longest = int(self.corpus.held_out(self.split).doc_lengths().max())
        return f"no_document: no {self.split} document has {length + 1} tokens (longest has {longest})"

    def _score(self, session: Session, windows: list[Window], length: int, n_docs: int, meter,
               keep_targets: bool = False) -> Scores:
        return score_windows(session.model, self.corpus.held_out(self.split).tokens, windows, length,
                             max(1, self.batch_tokens // length), session.device, min(self.buckets, length),
                             n_docs, on_batch=meter.advance, keep_targets=keep_targets)

    def crop_lengths(self, session: Session) -> dict[str, int]:
        """The contexts the crop cuts to: the training length (columns ``ppl_crop``, ``nll_gain``, ...) and, for a
        run fine-tuned from another (init_from), also the source's length (the same columns ``..._source``): does
        the extended model use the context it was extended to, and past it?"""
        if not self.crop:
            return {}
        lengths = {"": session.train_len}
        source = int(session.cfg.get("init_from_seq_len", 0) or 0)
        if 0 < source < session.train_len:
            lengths["_source"] = source
        return lengths

    def measure(self, session: Session, length: int, rows: list[dict], meter) -> list[tuple[Table, list]]:
        row = rows[0]
        docs = self.documents(session, length)
        windows = make_windows(docs, length, self.protocol, row["stride"])
        crops = {suffix: crop_windows(windows, length, cut, self._crop_stride(cut), self.crop_sample)
                 if length > cut else []
                 for suffix, cut in self.crop_lengths(session).items()}
        meter.total(len(windows) + sum(map(len, crops.values())))
        full = self._score(session, windows, length, len(docs), meter, keep_targets=any(crops.values()))
        row.update(nll=full.nll, ppl=math.exp(full.nll), nll_se=full.se, n_tokens=full.count,
                   n_windows=len(windows), n_documents=len({w.doc for w in windows}), status="ok")
        for suffix, cut in self.crop_lengths(session).items():
            if crops[suffix]:
                with session.scaling_at(cut):
                    cropped = self._score(session, crops[suffix], cut, len(docs), meter, keep_targets=True)
                gain, se = crop_gain(full, cropped)
            else:  # up to the crop length the crop is the full evaluation: every context is within it
                gain, se = 0.0, 0.0
            row.update(self._crop_columns(full.nll, gain, se, suffix), crop_stride=self._crop_stride(session.train_len),
                       crop_sample=self.crop_sample)
        shared = {k: row[k] for k in ("pe", "train_seq_len", "eval_len", "split", "protocol", "stride",
                                      "rope_scaling", "logit_scale")}
        positions = [{**shared, "position_start": full.edges[i], "position_end": full.edges[i + 1],
                      "mean_nll": full.bucket_nll[i] / full.bucket_n[i], "n_tokens": int(full.bucket_n[i])}
                     for i in range(len(full.bucket_n)) if full.bucket_n[i]]
        return [(POSITIONS_TABLE, positions)]

    def _crop_stride(self, cut: int) -> int:
        return crop_stride(cut, min(self.crop_stride, cut))

    @staticmethod
    def _crop_columns(nll: float, gain: float, se: float, suffix: str) -> dict:
        """The cropped baseline's columns (``suffix`` "" or "_source") from the full NLL and the gain."""
        return {f"ppl_crop{suffix}": math.exp(nll + gain), f"nll_gain{suffix}": gain, f"gain_se{suffix}": se,
                **({"nll_crop": nll + gain} if not suffix else {})}

    def summary(self, rows: list[dict]) -> str:
        row = rows[0]
        gain = f", gain {row['nll_gain']:+.4f} ± {row['gain_se']:.4f} nats" if row.get("nll_gain", "") != "" else ""
        return f"ppl {row['ppl']:.3f} over {row['n_tokens']} tokens{gain}"


def _as_int(value, default: int = 0) -> int:
    """A CSV cell as an integer (``default`` when empty)."""
    return int(float(value)) if value not in (None, "") else default


def default_split(cfg) -> str:
    """The held-out documents a run is evaluated on unless told: its ``eval.split`` (test, by default), or
    validation for a run recorded before the test split existed (the only held-out documents it has)."""
    data = cfg.get("data") or {}
    has_test = (test_fraction(data) > 0 or bool(data.get("test_split", "")) or data.get("source") == "passkey")
    return str(cfg.eval.get("split", "test")) if has_test else "val"


def checked_probe(cfg, lengths: list[int], protocol: str, stride: int | None, max_tokens: int | None,
                  batch_tokens: int, buckets: int, split: str | None = None, crop: bool | None = None,
                  crop_stride: int | None = None, region_len: int | None = None,
                  crop_sample: int | None = None) -> PerplexityProbe:
    """Every option checked before the model is loaded: a typo costs nothing and writes nothing. Options left
    None take the run's ``eval`` settings (``split``, ``crop``, ``crop_stride``, ``crop_sample``; ``region_len``:
    tokens per document region, default the run's eval.region_len, else eval.region_multiple x its length)."""
    choose("protocol", protocol, PROTOCOLS)
    if region_len is not None and region_len <= 0:
        raise UserError(f"--region-len must be a positive number of tokens, got {region_len}")
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
    split = choose("evaluation split (--split)", split or default_split(cfg), HELD_OUT)
    crop = bool(cfg.eval.get("crop", True)) if crop is None else crop
    crop_stride = int(cfg.eval.get("crop_stride", 0)) if crop_stride is None else crop_stride
    if crop_stride < 0:
        raise UserError(f"crop stride must be >= 0 (0: the default, a 16th of the training length), got {crop_stride}")
    crop_every = checked_sample(int(cfg.eval.get("crop_sample", SAMPLE_EVERY)) if crop_sample is None else crop_sample)
    return PerplexityProbe(protocol, stride, max_tokens, batch_tokens, buckets,
                           float(cfg.eval.get("region_multiple", 16)), region_len or int(cfg.eval.get("region_len", 0)),
                           split, crop, crop_stride, crop_every)


def check_options(lengths: list[int] | None, protocol: str, stride: int | None, max_tokens: int | None,
                  split: str | None = None, crop_stride: int | None = None, region_len: int | None = None,
                  crop_sample: int | None = None) -> None:
    """The options all runs of one command share, checked once before the first run by the code that checks them
    for each run, so a typo is one error rather than one per run of a sweep. Without --lengths each run's own
    lengths bound --stride: that check stays with the run."""
    from omegaconf import OmegaConf

    stand_in = OmegaConf.create({"eval": {"max_tokens": 0}})  # used only where --max-tokens is not given
    checked_probe(stand_in, lengths or [stride or 1], protocol, stride, max_tokens, batch_tokens=1, buckets=1,
                  split=split or "val", crop_stride=crop_stride, region_len=region_len, crop_sample=crop_sample)


def eval_length(run_dir, lengths: list[int] | None = None, protocol: str = "nonoverlapping",
                stride: int | None = None, rope_scaling: dict | str | None = AS_TRAINED, max_tokens: int | None = None,
                batch_tokens: int = 8192, device: str | None = None, model=None, buckets: int = 32,
                log=console.print, only_missing: bool = False, split: str | None = None, crop: bool | None = None,
                crop_stride: int | None = None, region_len: int | None = None,
                logit_scale: str = AS_TRAINED, crop_sample: int | None = None) -> list[dict]:
    """Evaluate a finished run at each length (default: ``eval.multiples`` x the training length) on its test
    (or ``split``) documents, with the cropped baseline beside every length past the training length unless
    ``crop`` is False; merge the rows into RUN/eval_length.csv and RUN/eval_positions.csv and return them.
    ``only_missing``: only the lengths that have no result yet for this protocol, split and scaling (a relaunch
    completes an interrupted evaluation); ``logit_scale``: none or logn at evaluation (default: the run's own, see
    ropebench.core.temperature)."""
    session = Session(run_dir, log)
    lengths = lengths or run_lengths(session.cfg)
    probe = checked_probe(session.cfg, lengths, protocol, stride, max_tokens, batch_tokens, buckets, split, crop,
                          crop_stride, region_len, crop_sample)
    probe.tokenizer = str(session.cfg.data.get("tokenizer", "bytes") or "bytes")  # configs before it: bytes
    return run_probe(probe, session, lengths, rope_scaling, only_missing, device, model, logit_scale)


def missing_lengths(run_dir, lengths: list[int] | None = None, protocol: str = "nonoverlapping",
                    stride: int | None = None) -> list[int]:
    """The wanted lengths (default: the run's evaluation lengths) that have no row for ``protocol`` and the run's
    evaluation split (with the crop columns when the run asks for them) under the run's own (trained) scaling in
    RUN/eval_length.csv; a row that records an error counts as missing."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    lengths = lengths or run_lengths(cfg)
    probe = checked_probe(cfg, lengths, protocol, stride, 0, 1, 1)
    return [length for length, cells in missing_cells(run, probe, lengths).items() if cells]
