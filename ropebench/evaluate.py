"""Perplexity beyond the training length, on validation documents, with the two standard protocols.

* ``nonoverlapping`` (the ALiBi paper's main tables): each document is cut into consecutive windows of
  L tokens and every token is scored.
* ``sliding`` with stride S: windows of L tokens moved by S; the first window of a document scores all its
  tokens, every later one only its last S (a final window ending at the document's end picks up the rest),
  so every scored token after the first window sees at least L - S tokens of context.

Negative log-likelihood is averaged per token, never per window. A length L uses validation documents with
at least L + 1 tokens (L inputs plus the target of the last one); when none has that many the row says so.

So that every length scores the same text, each document contributes the same region: its first
R = max(L, eval.region_multiple x training length) tokens (R = 16 x L_train by default, the longest default
length). Lengths up to R therefore score the same targets of the same documents, chunked differently; the
token budget (``eval.max_tokens``) is spent on whole regions: the first ceil(max_tokens / R) documents in a fixed
pseudo-random order, so every length up to R sees exactly the same documents.
Evaluation of one length failing never loses the lengths already written.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ropebench import rundir
from ropebench.data import load_corpus
from ropebench.errors import UserError, choose
from ropebench.progress import console, progress_bar

PROTOCOLS = ("nonoverlapping", "sliding")
COLUMNS = ["pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling", "rope_factor", "ppl", "nll",
           "n_tokens", "n_windows", "n_documents", "status"]
POSITION_COLUMNS = ["pe", "train_seq_len", "eval_len", "protocol", "stride", "rope_scaling", "position_start",
                    "position_end", "mean_nll", "n_tokens"]
KEY = ("eval_len", "protocol", "stride", "rope_scaling")
POSITIONS_CSV = "eval_positions.csv"
DEFAULT_MULTIPLES = (1, 1.25, 1.5, 2, 4, 8, 16)


@dataclass(frozen=True)
class Window:
    start: int  # index of the first input token in the token stream
    n_score: int  # how many of the window's last targets are scored
    doc: int  # which document (index into the spans given)


def make_windows(docs, length: int, protocol: str, stride: int) -> list[Window]:
    """Windows of ``length`` inputs over document spans [start, end)."""
    windows = []
    for doc, (start, end) in enumerate(docs):
        last_target = end - 1  # targets are tokens start+1 .. end-1
        if last_target - start < length:
            continue
        s, covered = start, start  # covered: last target scored so far
        while s + length <= last_target:
            n = length if s == start else min(stride, s + length - covered)
            windows.append(Window(s, n, doc))
            covered = s + length
            s += length if protocol == "nonoverlapping" else stride
        if protocol == "sliding" and covered < last_target:
            windows.append(Window(last_target - length, last_target - covered, doc))
    return windows


def default_lengths(train_seq_len: int, multiples=DEFAULT_MULTIPLES) -> list[int]:
    return sorted({max(1, int(round(m * train_seq_len))) for m in multiples})


def parse_lengths(text: str | None, train_seq_len: int) -> list[int]:
    if not text:
        return default_lengths(train_seq_len)
    lengths = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) <= 0:
            raise UserError(f"evaluation length '{item}' is not a positive integer; use e.g. --lengths 64,128,256")
        lengths.append(int(item))
    return sorted(set(lengths))


def _scaling_spec(rope_scaling: dict | None, eval_len: int, train_len: int):
    """The rope_scaling dict for one length: with no factor given, factor = eval_len / train_len (>= 1)."""
    if not rope_scaling:
        return None, "none", ""
    spec = dict(rope_scaling)
    fixed = spec.get("factor") is not None
    spec.setdefault("original_max_position_embeddings", train_len)
    if not fixed:
        spec["factor"] = max(1.0, eval_len / train_len)
    label = spec["rope_type"] + (f"(factor={spec['factor']:g})" if fixed else "")
    return spec, label, f"{spec['factor']:g}"


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


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge_rows(path: Path, new_rows: list[dict], columns: list[str], key=KEY) -> None:
    """Replace rows with the same key, keep all others, write atomically."""
    new_keys = {tuple(str(r[k]) for k in key) for r in new_rows}
    rows = [r for r in read_rows(path) if tuple(r.get(k, "") for k in key) not in new_keys] + new_rows
    rows.sort(key=lambda r: (str(r.get("rope_scaling", "")), r.get("protocol", ""), int(r["eval_len"]),
                             int(r.get("stride") or 0), float(r.get("depth") or 0), int(r.get("position_start", 0))))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    rundir.atomic_write_text(path, out.getvalue())


def eval_length(run_dir, lengths: list[int] | None = None, protocol: str = "nonoverlapping",
                stride: int | None = None, rope_scaling: dict | None = None, max_tokens: int | None = None,
                batch_tokens: int = 8192, device: str | None = None, model=None, buckets: int = 32,
                log=console.print) -> list[dict]:
    """Evaluate a finished run at each length; merge the rows into RUN/eval_length.csv and return them."""
    run_dir = Path(run_dir)
    choose("protocol", protocol, PROTOCOLS)
    cfg = rundir.load_config(run_dir)
    train_len = int(cfg.train.seq_len)
    lengths = lengths or default_lengths(train_len, cfg.eval.multiples)
    if stride is not None:
        if protocol != "sliding":
            raise UserError("--stride applies to --protocol sliding only")
        if stride <= 0:
            raise UserError(f"stride must be a positive integer, got {stride}")
        if stride > min(lengths):
            raise UserError(f"stride {stride} is larger than evaluation length {min(lengths)}; use a stride <= it")
    if max_tokens is None:
        max_tokens = int(cfg.eval.max_tokens)
    target = rundir.resolve_device(device or cfg.train.device)
    if model is None:
        model, cfg = rundir.load_model(run_dir, target)
    model.eval()
    target = next(model.parameters()).device
    if rope_scaling:
        if not hasattr(model.pe, "set_scaling"):
            raise UserError(f"--rope-scaling needs a RoPE-family run; {run_dir} uses pe={cfg.pe.name}")
    corpus = load_corpus(cfg.data, log=log)
    limit = model.pe.max_len()
    rows, position_rows = [], []
    with progress_bar() as bar:
        for length in lengths:
            step = length if protocol == "nonoverlapping" else (stride or max(1, length // 2))
            spec, label, factor = _scaling_spec(rope_scaling, length, train_len)
            row = {"pe": cfg.pe.name, "train_seq_len": train_len, "eval_len": length, "protocol": protocol,
                   "stride": step, "rope_scaling": label, "rope_factor": factor, "ppl": "", "nll": "",
                   "n_tokens": 0, "n_windows": 0, "n_documents": 0}
            region = max(length, int(cfg.eval.get("region_multiple", 16) * train_len))
            docs = corpus.val.documents(min_len=region + 1) or corpus.val.documents(min_len=length + 1)
            if max_tokens:  # whole regions: the same documents at every length up to the region
                docs = docs[: math.ceil(max_tokens / region)]
            docs = [(start, min(end, start + region + 1)) for start, end in docs]
            if limit is not None and length > limit:
                row["status"] = f"not_applicable: {cfg.pe.name} positions stop at max_len={limit}"
            elif not docs:
                longest = int(corpus.val.doc_lengths().max())
                row["status"] = (f"no_document: no validation document has {length + 1} tokens "
                                 f"(longest has {longest})")
            else:
                row.update(_evaluate_one(model, corpus, docs, length, protocol, step, batch_tokens, target, spec,
                                         buckets, bar, position_rows, row))
            rows.append(row)
            log(f"  L={length:>6} {label:>8}: " + (f"ppl {row['ppl']:.3f} over {row['n_tokens']} tokens"
                                                  if row["status"] == "ok" else row["status"]))
            # Written after every length: a later failure never loses what was computed.
            merge_rows(run_dir / rundir.EVAL_CSV, [row], COLUMNS)
            if position_rows:
                merge_rows(run_dir / POSITIONS_CSV, position_rows, POSITION_COLUMNS,
                           key=(*KEY, "position_start"))
                position_rows = []
    if rope_scaling:
        model.pe.set_scaling(None)
    return rows


def _evaluate_one(model, corpus, docs, length, protocol, step, batch_tokens, device, spec, buckets, bar,
                  position_rows, row) -> dict:
    windows = make_windows(docs, length, protocol, step)
    batch_size = max(1, batch_tokens // length)
    task = bar.add_task(f"eval L={length}", total=len(windows), rate="", info=row["rope_scaling"])
    try:
        if spec is not None:
            model.pe.set_scaling(spec)
        total, count, edges, bucket_nll, bucket_n = score_windows(
            model, corpus.val.tokens, windows, length, batch_size, device, min(buckets, length),
            on_batch=lambda n: bar.advance(task, n))
    except (RuntimeError, MemoryError) as exc:  # e.g. out of memory at one length: record it, go on
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    finally:
        bar.remove_task(task)
    for i in range(len(bucket_n)):
        if bucket_n[i]:
            position_rows.append({**{k: row[k] for k in ("pe", "train_seq_len", "eval_len", "protocol", "stride",
                                                         "rope_scaling")},
                                  "position_start": edges[i], "position_end": edges[i + 1],
                                  "mean_nll": bucket_nll[i] / bucket_n[i], "n_tokens": int(bucket_n[i])})
    nll = total / count
    return {"nll": nll, "ppl": math.exp(nll), "n_tokens": count, "n_windows": len(windows),
            "n_documents": len({w.doc for w in windows}), "status": "ok"}
