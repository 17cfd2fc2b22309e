"""Task accuracy (``ropebench eval-task``): each test instance's answer decoded greedily, exact match (every
answer token right) and per-token accuracy, per bucket of instance lengths.

The instances and what their length means come from ``ropebench.data.tasks``; test instances are never in the
training stream. A bucket ``LO-HI`` holds ``trials`` instances, each of a length drawn uniformly from LO .. HI,
the same instances for every run (seeded by the bucket). Decoding: at each answer position in turn the model's
argmax is written in and read back for the next prediction (MQAR's query keys are given, as in the prompt), so a
wrong token is never corrected by the reference. The loop around one bucket (config, model, statuses, the merge
after every bucket, resume) is ``ropebench.eval.runner``'s; a bucket is keyed by its ``eval_len`` = HI and
``len_min`` = LO.
"""

from __future__ import annotations

import random
import re
import zlib

import torch

from ropebench.data import tasks
from ropebench.errors import UserError
from ropebench.eval.runner import AS_TRAINED, Probe, Session, Table, run_probe
from ropebench.progress import console
from ropebench.run.rundir import TASK_CSV

COLUMNS = ("pe", "train_seq_len", "task", "task_len", "eval_len", "len_min", "tokens", "rope_scaling", "rope_factor",
           "rope_scale", "trials", "exact", "exact_match", "token_accuracy", "status")
TASK_TABLE = Table(TASK_CSV, COLUMNS, ("eval_len", "len_min", "rope_scaling"), ("rope_scaling", "eval_len", "len_min"))
DEFAULT_TRIALS = 100
MULTIPLE = 4  # default buckets: every length 1 .. 4 L
_BUCKET = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_buckets(text: str | None) -> list[tuple[int, int]] | None:
    """``--lengths 1-6,7-12,13,24`` as sorted distinct (LO, HI) buckets; a single N is the bucket N-N. None
    when not given (the run's default buckets)."""
    if not text:
        return None
    buckets = set()
    for item in (part.strip() for part in text.split(",")):
        match = _BUCKET.fullmatch(item)
        lo, hi = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
        if lo <= 0 or hi < lo:
            raise UserError(f"length bucket '{item}' is not N or LO-HI with 1 <= LO <= HI (instance lengths: "
                            "items, not tokens); use e.g. --lengths 1-6,7-12,13-24")
        buckets.add((lo, hi))
    return sorted(buckets, key=lambda b: (b[1], b[0]))


def default_buckets(train_len: int) -> list[tuple[int, int]]:
    return [(n, n) for n in range(1, MULTIPLE * train_len + 1)]


def task_of(cfg) -> tuple[str, int]:
    """(task, L) of a run trained on a task; a run trained on text is refused."""
    if str(cfg.data.source) != "task":
        raise UserError(f"eval-task measures runs trained on a task (data=task); this run was trained on "
                        f"data={cfg.data.name}")
    return tasks.get_task(cfg.data.task).name, tasks.train_len(cfg.data)


def _bucket_rng(task: str, lo: int, hi: int) -> random.Random:
    # Seeded by the bucket alone: every run, seed and re-run sees the same instances.
    return random.Random(zlib.crc32(f"task:{task}:{lo}:{hi}".encode()))


@torch.no_grad()
def greedy_answers(model, instances: list[tasks.Instance], device) -> torch.Tensor:
    """(B, A) bool: whether each answer token of instances of one length (one layout) was decoded right."""
    truth = torch.tensor([i.tokens for i in instances], dtype=torch.int64)
    answer = torch.tensor(instances[0].answer)
    ids = truth.clone().to(device)
    for p in answer.nonzero().flatten().tolist():  # in order: each prediction sees the ones before it
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, _ = model(ids[:, :p])
        ids[:, p] = logits[:, -1].argmax(-1)
    return (ids.cpu() == truth)[:, answer]


class TaskProbe(Probe):
    """Exact match and per-token accuracy of one task's test instances, one row per bucket."""

    table = TASK_TABLE
    label = "task"

    def __init__(self, task: str, train_len: int, buckets, trials: int = DEFAULT_TRIALS, batch_tokens: int = 16384):
        self.task, self.train_len, self.trials, self.batch_tokens = task, train_len, trials, batch_tokens
        self.starts: dict[int, list[int]] = {}  # HI -> the LOs of its buckets
        for lo, hi in buckets:
            self.starts.setdefault(hi, []).append(lo)

    def lengths(self) -> list[int]:
        return sorted(self.starts)

    def cells(self, length: int) -> list[dict]:
        return [{"task": self.task, "task_len": self.train_len, "len_min": lo,
                 "tokens": tasks.get_task(self.task).n_tokens(length), "trials": self.trials, "exact": "",
                 "exact_match": "", "token_accuracy": ""} for lo in self.starts[length]]

    def unavailable(self, session: Session, length: int) -> str | None:
        limit, task = session.model.pe.max_len(), tasks.get_task(self.task)
        if task.max_len is not None and length > task.max_len:
            return f"not_applicable: task {self.task} expresses lengths up to {task.max_len}"
        if limit is not None and tasks.window(self.task, length) > limit:
            return (f"not_applicable: {session.pe_name} positions stop at max_len={limit} (length {length} needs "
                    f"{tasks.window(self.task, length)})")
        return None

    def measure(self, session: Session, length: int, rows: list[dict], meter) -> list[tuple[Table, list]]:
        meter.total(len(rows) * self.trials)
        for row in rows:
            row.update(self._score(session, row["len_min"], length, meter))
        return []

    def _score(self, session: Session, lo: int, hi: int, meter) -> dict:
        """The result fields of bucket LO-HI: its instances decoded, one length (one layout) at a time."""
        lengths = tasks.lengths_on_side(self.task, range(lo, hi + 1), test=True)
        if not lengths:
            meter.advance(self.trials)
            return {"status": f"no_instances: task {self.task} has no test instance of length {lo}-{hi}"}
        instances = tasks.sample(self.task, lengths, self.trials, _bucket_rng(self.task, lo, hi), test=True)
        hits = []
        for n in sorted({i.length for i in instances}):
            group = [i for i in instances if i.length == n]
            size = max(1, self.batch_tokens // len(group[0].tokens))
            for start in range(0, len(group), size):
                hits.append(greedy_answers(session.model, group[start : start + size], session.device))
                meter.advance(len(hits[-1]))
        exact = sum(int(h.all(dim=1).sum()) for h in hits)
        right, total = sum(int(h.sum()) for h in hits), sum(h.numel() for h in hits)
        return {"exact": exact, "exact_match": exact / self.trials, "token_accuracy": right / total, "status": "ok"}

    def summary(self, rows: list[dict]) -> str:
        done = [r for r in rows if r.get("status") == "ok"]
        if not done:
            return rows[0].get("status", "")
        return ", ".join(("" if r["len_min"] == r["eval_len"] else f"lengths {r['len_min']}-{r['eval_len']}: ")
                         + f"exact match {r['exact_match']:.3f}, per token {r['token_accuracy']:.3f}" for r in done)


def _checked(cfg, buckets, trials: int):
    """Every argument checked before any work, so a bad value never leaves half a result."""
    if trials <= 0:
        raise UserError(f"task trials must be a positive integer, got {trials}")
    task, train_len = task_of(cfg)
    return task, train_len, buckets or default_buckets(train_len)


def task_accuracy(run_dir, buckets: list[tuple[int, int]] | None = None, trials: int = DEFAULT_TRIALS,
                  device: str | None = None, batch_tokens: int = 16384, log=None, model=None,
                  only_missing: bool = False) -> list[dict]:
    """Exact match and per-token accuracy of a finished data=task run per length bucket (default: every length
    1 .. 4 L), merged into RUN/eval_task.csv; ``only_missing``: only the buckets without a result yet."""
    session = Session(run_dir, log or console.print)
    task, train_len, buckets = _checked(session.cfg, buckets, trials)
    probe = TaskProbe(task, train_len, buckets, trials, batch_tokens)
    return run_probe(probe, session, probe.lengths(), AS_TRAINED, only_missing, device, model)
