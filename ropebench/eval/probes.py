"""Retrieval probes by length x depth: RULER's needle tasks and variable tracking (Hsieh et al. 2024, arXiv
2404.06654) and the passkey, scored two ways on the trials of ``ropebench.data.probes`` (the task registry:
``TASKS``, name -> generator), merged into RUN/probe.csv by the probe runner (``ropebench.eval.runner``).

* **likelihood** (``accuracy``): a trial is correct when its true answer's total NLL -- summed over every answer
  token, the text between slots given -- is lower than each of its K - 1 distractors'. A model that ignores the
  context ranks the true answer first 1/K of the time: ``chance``, recorded in every row. RULER scores
  instruction-tuned models by string match; small base models rarely follow a question, but their likelihoods
  still say whether the needle was read.
* **greedy** (``exact_accuracy``): a trial is exact when every true answer token is the model's argmax given the
  true text before it -- exactly what greedy decoding reproduces, the text between slots given (a causal model's
  prediction at a position does not depend on later tokens), read off the true answer's likelihood pass at no extra
  cost. A scaling that follows the input length (dynamic NTK) is the full length's throughout, as for the likelihood.

``answer_nll`` is the true answer's mean total NLL (nats). Scores run batched over trials and candidates, sequences
of one length per batch, so no token is ever padded. The passkey command (``ropebench.eval.passkey``) is the
passkey task scored by decoding step by step (``greedy_exact``), as it always was.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ropebench.data.passkey import check_depth
from ropebench.data.probes import TASKS, Encoder, Trial
from ropebench.errors import UserError, choose
from ropebench.eval.runner import AS_TRAINED, Probe, Session, Table, run_probe
from ropebench.progress import console
from ropebench.run.rundir import PROBE_CSV

COLUMNS = ("pe", "train_seq_len", "eval_len", "task", "depth", "rope_scaling", "rope_factor", "rope_scale", "trials",
           "candidates", "chance", "correct", "accuracy", "exact_correct", "exact_accuracy", "answer_nll", "status")
KEY = ("task", "eval_len", "depth", "rope_scaling")
PROBE_TABLE = Table(PROBE_CSV, COLUMNS, KEY, ("rope_scaling", "task", "eval_len", "depth"))
# The defaults of `ropebench probe`, of eval.probes after training and of sweeps: here and nowhere else.
DEFAULT_TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "vt")
DEFAULT_MULTIPLES = (1, 1.5, 2, 4, 8, 16)  # x the training length, unless the run sets eval.lengths
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_TRIALS = 6
DEFAULT_CANDIDATES = 6
MAX_CANDIDATES = 100  # each candidate is one more pass over the whole sequence
BATCH_TOKENS = 16384


def _batches(items: list, size: int) -> Iterable[list]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _by_length(sequences: list[list[int]]) -> dict[int, list[int]]:
    """Indices of ``sequences`` grouped by length, first-seen order kept."""
    groups: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        groups.setdefault(len(seq), []).append(i)
    return groups


@torch.no_grad()
def answer_scores(session: Session, sequences: list[list[int]], positions: list[list[int]], length: int,
                  batch_tokens: int = BATCH_TOKENS) -> list[tuple[float, bool]]:
    """Per sequence: (the total NLL in nats of its tokens at ``positions``, each given the tokens before it; whether
    each of them is the model's argmax there). Batches of ``batch_tokens // length`` sequences of one length."""
    out: list[tuple[float, bool]] = [(0.0, False)] * len(sequences)
    for same in _by_length(sequences).values():
        for batch in _batches(same, max(1, batch_tokens // length)):
            ids = torch.tensor([sequences[i] for i in batch], device=session.device)
            width = max(len(positions[i]) for i in batch)
            at = torch.tensor([positions[i] + [positions[i][0]] * (width - len(positions[i])) for i in batch],
                              device=session.device)
            mask = torch.tensor([[j < len(positions[i]) for j in range(width)] for i in batch], device=session.device)
            logits = session.logits_at(ids[:, :-1], at - 1).float()
            targets = ids.gather(1, at)
            nll = -logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
            argmax = (logits.argmax(-1) == targets) | ~mask
            for i, total, right in zip(batch, (nll * mask).sum(-1).tolist(), argmax.all(-1).tolist()):
                out[i] = (total, right)
    return out


def rank_answers(session: Session, trials: list[Trial], length: int,
                 batch_tokens: int = BATCH_TOKENS) -> list[tuple[bool, float, bool]]:
    """Per trial: (its true answer's NLL is below every distractor's, the true answer's NLL, every true answer token
    is the argmax after the true text before it -- what greedy decoding, the text between slots given, reproduces)."""
    index = [(t, k) for t, trial in enumerate(trials) for k in range(len(trial.candidates))]
    scored = answer_scores(session, [trials[t].tokens(k) for t, k in index],
                           [trials[t].answer_positions(k) for t, k in index], length, batch_tokens)
    by_trial: list[list[tuple[float, bool]]] = [[] for _ in trials]
    for (t, _), score in zip(index, scored):
        by_trial[t].append(score)
    return [(all(s[0][0] < other for other, _ in s[1:]), s[0][0], s[0][1]) for s in by_trial]


@torch.no_grad()
def greedy_exact(session: Session, trials: list[Trial], length: int, batch_tokens: int = BATCH_TOKENS) -> list[bool]:
    """Per trial: greedy decoding reproduces the true answer, every token (the text between slots given), decoded
    step by step -- the passkey command's scorer, whose dynamic NTK follows the input as it grows. Trials with the
    same answer positions decode together, ``batch_tokens // length`` at a time, one step per answer token; a batch
    stops at the step where none of its trials is still right."""
    exact = [False] * len(trials)
    groups: dict[tuple, list[int]] = {}
    for t, trial in enumerate(trials):
        groups.setdefault((len(trial.tokens()), tuple(trial.answer_positions())), []).append(t)
    for (_, positions), same in groups.items():
        for batch in _batches(same, max(1, batch_tokens // length)):
            seq = torch.tensor([trials[t].tokens() for t in batch], device=session.device)
            right = torch.ones(len(batch), dtype=torch.bool, device=session.device)
            for p in positions:
                at = torch.full((len(batch), 1), p - 1, device=session.device)
                right &= session.logits_at(seq[:, :p], at)[:, 0].argmax(-1) == seq[:, p]
                if not right.any():
                    break
            for t, ok in zip(batch, right.tolist()):
                exact[t] = ok
    return exact


class RetrievalProbe(Probe):
    """Likelihood and greedy accuracy at one length: one row per task and depth."""

    table = PROBE_TABLE
    label = "probes"

    def __init__(self, tasks, depths, trials: int, candidates: int, batch_tokens: int = BATCH_TOKENS):
        self.tasks, self.depths = list(tasks), list(depths)
        self.trials, self.candidates, self.batch_tokens = trials, candidates, batch_tokens
        self.encoder: Encoder | None = None

    def cells(self, length: int) -> list[dict]:
        return [{"task": task, "depth": depth, "trials": self.trials, "candidates": self.candidates,
                 "chance": 1 / self.candidates, "correct": "", "accuracy": "", "exact_correct": "",
                 "exact_accuracy": "", "answer_nll": ""} for task in self.tasks for depth in self.depths]

    def prepare(self, session: Session) -> None:
        self.encoder = session.encoder()

    def measure(self, session: Session, length: int, rows: list[dict], meter) -> list[tuple[Table, list]]:
        meter.total(len(rows))
        for row in rows:
            trials = TASKS[row["task"]](self.encoder, length, row["depth"], self.trials, self.candidates)
            ranked = rank_answers(session, trials, length, self.batch_tokens)
            correct, exact = sum(r[0] for r in ranked), sum(r[2] for r in ranked)
            row.update(correct=correct, accuracy=correct / self.trials, exact_correct=exact,
                       exact_accuracy=exact / self.trials, answer_nll=sum(r[1] for r in ranked) / self.trials,
                       status="ok")
            meter.advance()
        return []

    def summary(self, rows: list[dict]) -> str:
        n = len(rows)
        return (f"accuracy {sum(r['accuracy'] for r in rows) / n:.3f} (chance {1 / self.candidates:.3f}), exact "
                f"{sum(r['exact_accuracy'] for r in rows) / n:.3f} over {n} task x depth cells")


# ---- checked arguments ---------------------------------------------------------------------------------------------

def parse_tasks(text: str | None) -> list[str]:
    """``--task niah_single,vt`` as task names, each checked; empty: the default tasks."""
    if not text:
        return list(DEFAULT_TASKS)
    tasks = [item.strip() for item in text.split(",") if item.strip()]
    if not tasks:
        raise UserError(f"no probe task given; choose from: {', '.join(sorted(TASKS))}")
    return list(dict.fromkeys(choose("probe task", task, TASKS) for task in tasks))


def parse_depths(text: str | None, task: str = "probe", default=DEFAULT_DEPTHS) -> list[float]:
    """``--depths 0,0.5,1`` as sorted distinct fractions in [0, 1]; empty: ``default``. ``task`` names the
    depths in a refusal."""
    if not text:
        return list(default)
    depths = []
    for item in text.split(","):
        try:
            value = float(item.strip())
        except ValueError:
            raise UserError(f"{task} depth '{item.strip()}' is not a number; use fractions such as "
                            "0,0.25,0.5,0.75,1") from None
        depths.append(check_depth(value, task))
    return sorted(set(depths))


def check_counts(trials: int, candidates: int) -> None:
    if trials <= 0:
        raise UserError(f"probe trials must be a positive integer, got {trials}")
    if not 2 <= candidates <= MAX_CANDIDATES:
        raise UserError(f"probe candidates K must be between 2 (the answer and one distractor) and {MAX_CANDIDATES}, "
                        f"got {candidates}")


def check_lengths(encoder: Encoder, tasks, lengths, depths, trials: int, candidates: int) -> None:
    """Build every trial once, so a length too short for a task's template is refused before any work (the
    shortest length depends on the tokenizer, and on the keys drawn when it is not bytes)."""
    for task in tasks:
        for length in lengths:
            for depth in depths:
                TASKS[task](encoder, length, depth, trials, candidates)


def wants_probes(cfg, asked: bool = False) -> bool:
    """Whether a run is probed after training and by its sweep: eval.probes (or ``asked``: the sweep asks for them);
    never a data=passkey run, whose task is the passkey alone."""
    return (bool(cfg.eval.get("probes")) or asked) and cfg.data.source != "passkey"


def default_lengths(cfg) -> list[int]:
    """``eval.lengths`` when the run sets them, else ``DEFAULT_MULTIPLES`` x its training length."""
    if cfg.eval.get("lengths"):
        return sorted({int(x) for x in cfg.eval.lengths})
    return sorted({round(m * int(cfg.train.seq_len)) for m in DEFAULT_MULTIPLES})


def probe_accuracy(run_dir, tasks=None, lengths: list[int] | None = None, depths=None, trials: int = DEFAULT_TRIALS,
                   candidates: int = DEFAULT_CANDIDATES, rope_scaling: dict | str | None = AS_TRAINED,
                   device: str | None = None, batch_tokens: int = BATCH_TOKENS, log=None, model=None,
                   only_missing: bool = False) -> list[dict]:
    """The probes of a finished run at each (task, length, depth), merged into RUN/probe.csv; defaults as above.
    RoPE scaling is resolved per length as in eval-length (default: as the run was trained). ``only_missing``:
    only the cells that have no result yet for this scaling."""
    session = Session(run_dir, log or console.print)
    tasks = list(DEFAULT_TASKS if tasks is None else tasks)
    depths = sorted({check_depth(d, "probe") for d in (DEFAULT_DEPTHS if depths is None else depths)})
    check_counts(trials, candidates)
    lengths = sorted(set(lengths or default_lengths(session.cfg)))
    check_lengths(session.encoder(), tasks, lengths, depths, trials, candidates)
    probe = RetrievalProbe(tasks, depths, trials, candidates, batch_tokens)
    return run_probe(probe, session, lengths, rope_scaling, only_missing, device, model)


def hf_probe(request, tasks=None, lengths: list[int] | None = None, depths=None, trials: int = DEFAULT_TRIALS,
             candidates: int = DEFAULT_CANDIDATES, rope_scaling: dict | str | None = AS_TRAINED, log=console.print,
             only_missing: bool = False) -> list[dict]:
    """The probes of a Hugging Face model in its own tokens (default lengths: ``DEFAULT_MULTIPLES`` x
    max_position_embeddings), merged into OUT/probe.csv; returns the rows."""
    from ropebench.eval.hf_session import TOKENS_PER_PASS, open_session

    tasks = list(DEFAULT_TASKS if tasks is None else tasks)
    depths = sorted({check_depth(d, "probe") for d in (DEFAULT_DEPTHS if depths is None else depths)})
    check_counts(trials, candidates)
    session = open_session(request, rope_scaling, log, reads_data=False)
    lengths = sorted(set(lengths or default_lengths(session.cfg)))
    check_lengths(session.encoder(), tasks, lengths, depths, trials, candidates)
    # --batch-size sequences per pass, or as many as make TOKENS_PER_PASS tokens (at least one)
    batch_tokens = request.batch_size * max(lengths) if request.batch_size else TOKENS_PER_PASS
    probe = RetrievalProbe(tasks, depths, trials, candidates, batch_tokens)
    return run_probe(probe, session, lengths, rope_scaling, only_missing)


def probe_options(task: str | None, lengths: str | None, depths: str | None, trials: int = DEFAULT_TRIALS,
                  candidates: int = DEFAULT_CANDIDATES) -> dict:
    """The command's options as typed (comma-separated text), checked once for every path: tasks, lengths (None:
    each run's own), depths, trials, K."""
    from ropebench.eval.lengths import parse_lengths

    options = {"tasks": parse_tasks(task), "lengths": parse_lengths(lengths, 1) if lengths else None,
               "depths": parse_depths(depths), "trials": trials, "candidates": candidates}
    check_counts(trials, candidates)
    return options
