"""The probe runner: everything an evaluation of a finished run shares, whatever it measures.

A *probe* (perplexity, passkey retrieval, the retrieval probes) measures one evaluation length. The runner does the
rest, once:

* reads the run's config (``RunDir.read_config``) and loads its model, each once;
* refuses ``--rope-scaling`` unless the encoding declares it (``supports_rope_scaling``); with no scaling asked
  for (``AS_TRAINED``) a run is evaluated as it was trained -- with the RoPE scaling it was fine-tuned with, if
  any -- and an explicit ``None`` shows the raw model;
* per length, resolves the RoPE scaling (``freqs.scaling_for_length``) and records it in every row; likewise the
  attention temperature (``--logit-scale``, ``ropebench.core.temperature``): by default the run's own (DroPE's
  fitted beta, recorded in final.json), else none; recorded in the ``logit_scale`` column;
* records a length it cannot measure instead of failing: ``not_applicable`` (past the encoding's ``max_len``),
  the probe's own reason (e.g. ``no_document``), or ``error: Type: message`` for a ``RuntimeError`` or
  ``MemoryError`` (an out-of-memory at one length; an empty message gives ``error: Type``) -- the other
  lengths go on;
* merges each length's rows into the run directory as soon as they exist (``RunDir.merge_rows``: atomic and
  locked, so a later failure or a concurrent command never loses a row);
* restores the unscaled encoding whatever happens.

``missing_cells`` says which rows a run does not have yet, so that a relaunch evaluates only those.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.markup import escape

from ropebench.core import temperature
from ropebench.core.rope.freqs import scaling_for_length
from ropebench.errors import UserError
from ropebench.eval.cells import finite_float
from ropebench.progress import console, progress_bar
from ropebench.run.rundir import RunDir
from ropebench.run.stop import parent_asked

#: rope_scaling not given: the scaling the run was trained with (``pe.scaling``; none for most runs)
AS_TRAINED = "as_trained"
#: what a row written before the logit_scale column meant (no logit scale: the column came with the methods)
BEFORE_LOGIT_SCALE = {"logit_scale": "none"}
LOGITS_BUDGET = 2**25  # logits alive at once in Session.logits_at (128 MiB of float32)


def resolve_scaling(cfg, rope_scaling):
    """The rope_scaling dict to evaluate a run with: ``AS_TRAINED`` becomes the run's own trained scaling."""
    if isinstance(rope_scaling, str) and rope_scaling == AS_TRAINED:
        from ropebench.core.pe.rope import scaling_spec

        return scaling_spec(cfg.pe)
    return rope_scaling


@dataclass(frozen=True)
class Table:
    """One result CSV of a run directory: file name, columns, the key that identifies a row, the sort order."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    order: tuple[str, ...]
    # Values of columns added later, as rows written before them meant (split: val before the test split; every
    # table: logit_scale none before the column, whether or not the table has it).
    defaults: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "defaults", {**BEFORE_LOGIT_SCALE, **self.defaults})

    def sort_key(self, row: dict) -> tuple:
        return tuple(_sortable(row.get(column, "")) for column in self.order)


def _sortable(value) -> tuple:
    # Numbers by value, then text: a damaged cell sorts last instead of raising in the middle of a merge.
    number = finite_float(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def _identity(row: dict, key: Iterable[str]) -> tuple:
    # "64" read back from a CSV and 64 about to be written are one key; so are "0.0" and 0.
    return tuple(finite_float(row.get(k)) if finite_float(row.get(k)) is not None else str(row.get(k, ""))
                 for k in key)


class Session:
    """A finished run opened for evaluation: its config read once, its model loaded once."""

    def __init__(self, run_dir, log: Callable = console.print):
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.cfg = self.run.read_config()
        self.log = log
        self.model = None
        self.device = None
        self.rope_scaling = None  # what this evaluation asked for (run_probe sets it); None: the raw model

    @property
    def train_len(self) -> int:
        return int(self.cfg.train.seq_len)

    @property
    def original_len(self) -> int:
        """The length the weights learned positions at, which evaluation-time RoPE scaling stretches from (its
        default original_max_position_embeddings and the length its automatic factor divides): the source run's
        (``init_from_seq_len``) for a run that started from another's weights, else the training length."""
        return int(self.cfg.get("init_from_seq_len") or 0) or self.train_len

    @property
    def pe_name(self) -> str:
        return str(self.cfg.pe.name)

    def claim(self):
        """The run held while it is evaluated: shared, so evaluations run side by side (their rows merge under a
        lock of their own), never under a command that trains it (``RunDir.claim``)."""
        return self.run.claim(shared=True)

    def trained_logit_scale(self) -> dict | None:
        """The logit scale the run's training fitted (DroPE's beta, in final.json), or None."""
        from omegaconf import OmegaConf

        if OmegaConf.select(self.cfg, "train.drop_rope_at", default=None) is None:
            return None
        return self.run.read_final().get("logit_scale")

    def load_model(self, device: str | None = None, model=None) -> None:
        """The run's trained weights on ``device`` (default: the run's train.device); or a model already in
        memory (right after training), evaluated where it is."""
        if model is None:
            from ropebench.run.artifacts import load_model, resolve_device

            model = load_model(self.run, self.cfg, resolve_device(device or self.cfg.train.device))
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def encoder(self):
        """The run's tokenizer (``data.tokenizer``) as the retrieval probes use it; a run expects no lead token."""
        from ropebench.data.probes import Encoder
        from ropebench.data.tokenizer import load_tokenizer

        data = self.cfg.data
        return Encoder(load_tokenizer(str(data.get("tokenizer", "bytes")), bool(data.get("trust_remote_code"))).encode)

    def logits_at(self, ids, at):
        """The model's logits (B, A, V) at positions ``at`` (B, A) of ``ids`` (B, T), over the run's vocabulary
        (a checkpoint's padded rows left out); bfloat16 autocast on CUDA, as in training."""
        import torch

        from ropebench.data import vocab_size_for

        vocab = vocab_size_for(self.cfg.data)
        chunk = max(1, LOGITS_BUDGET // (ids.shape[1] * vocab))  # the model computes every position's logits
        out = []
        for rows, where in zip(ids.split(chunk), at.split(chunk)):
            with torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
                logits, _ = self.model(rows)
            out.append(logits[..., :vocab].gather(1, where[..., None].expand(-1, -1, vocab)))
        return torch.cat(out)

    @contextmanager
    def scaling_at(self, length: int):
        """The model with this evaluation's RoPE scaling as it applies at ``length`` (the cropped baseline's
        windows are the training length: a scaling that grows with the length is none there, a fixed one -- a
        run fine-tuned with it -- stays), restored after."""
        pe = getattr(self.model, "pe", None)
        if pe is None or not pe.supports_rope_scaling:
            yield
            return
        before = getattr(pe, "scaling", None)  # what it computes now (an HF model: its own modules, None)
        pe.set_scaling(scaling_for_length(self.rope_scaling, length, self.train_len)[0])
        try:
            yield
        finally:
            pe.set_scaling(before)


class Meter:
    """The progress of one length, in whatever units of work the probe counts (windows, depths)."""

    def __init__(self, bar, task):
        self._bar, self._task = bar, task

    def total(self, n: int) -> None:
        self._bar.update(self._task, total=n)

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)


class Probe(abc.ABC):
    """What one evaluation measures at one length. Subclasses set ``table`` (the CSV it writes) and ``label``
    (the progress bar's name)."""

    table: Table
    label: str

    @abc.abstractmethod
    def cells(self, length: int) -> list[dict]:
        """One dict per row written at ``length``: its key fields besides eval_len and rope_scaling, and its
        result fields left empty (what a row holds when the length cannot be measured)."""

    def complete(self, row: dict, train_len: int) -> bool:
        """Whether a row already written holds everything this probe would measure (a relaunch redoes it if not)."""
        return True

    def prepare(self, session: Session) -> None:
        """Load what every length needs (e.g. the corpus), once, after the model and only if there is work."""
        return None

    def unavailable(self, session: Session, length: int) -> str | None:
        """Why ``length`` cannot be measured (a status such as ``no_document: ...``), or None."""
        return None

    @abc.abstractmethod
    def measure(self, session: Session, length: int, rows: list[dict], meter: Meter) -> list[tuple[Table, list]]:
        """Fill in ``rows`` (the scaling is applied; set ``status`` to ``ok``) and return rows for other tables."""

    @abc.abstractmethod
    def summary(self, rows: list[dict]) -> str:
        """The log line's text for a measured length."""


def error_status(exc: BaseException) -> str:
    """``error: Type: first line of the message``, or ``error: Type`` when the message is empty."""
    lines = str(exc).strip().splitlines()
    return f"error: {type(exc).__name__}" + (f": {lines[0][:200]}" if lines else "")


def scaling_label(rope_scaling: dict | None, train_len: int) -> str:
    """The ``rope_scaling`` column of the rows a scaling writes (the same at every length)."""
    return scaling_for_length(rope_scaling, train_len, train_len)[1]["rope_scaling"]


def missing_cells(run: RunDir, probe: Probe, lengths: Iterable[int], label: str | None = None,
                  logit_label: str | None = None) -> dict[int, list[dict]]:
    """For each length, the cells that have no result yet under the scaling ``label`` and the logit scale
    ``logit_label`` (default: the run's own, as trained). A row that records an error counts as missing, so that
    a relaunch retries it; not_applicable and no_document rows are results."""
    session = Session(run)
    if label is None:
        label = scaling_label(resolve_scaling(session.cfg, AS_TRAINED), session.train_len)
    if logit_label is None:
        logit_label = temperature.label(session.trained_logit_scale())
    key, defaults = probe.table.key, probe.table.defaults
    rows = run.read_rows(probe.table.name, required=tuple(k for k in key if k not in defaults))
    done = {_identity({**defaults, **{k: v for k, v in row.items() if v not in ("", None)}}, key)
            for row in rows
            if not str(row.get("status", "")).startswith("error") and probe.complete(row, session.train_len)}
    return {length: [cell for cell in probe.cells(length)
                     if _identity({**cell, "eval_len": length, "rope_scaling": label, "logit_scale": logit_label},
                                  key) not in done]
            for length in lengths}


def run_probe(probe: Probe, session: Session, lengths: Iterable[int], rope_scaling: dict | str | None = AS_TRAINED,
              only_missing: bool = False, device: str | None = None, model=None,
              logit_scale: str = AS_TRAINED) -> list[dict]:
    """Measure ``probe`` at each length (only the cells the run lacks, with ``only_missing``); every length's
    rows are merged into the run directory as soon as they exist. Returns the rows written. The model is
    loaded here (``Session.load_model``) unless the session holds one -- and not at all when nothing is missing.
    ``logit_scale``: a ``--logit-scale`` name (none, logn) or AS_TRAINED (the run's own)."""
    with session.claim():
        return _run_probe(probe, session, list(lengths), rope_scaling, only_missing, device, model, logit_scale)


def _run_probe(probe: Probe, session: Session, lengths: list[int], rope_scaling, only_missing: bool, device,
               model, logit_scale) -> list[dict]:
    rope_scaling = resolve_scaling(session.cfg, rope_scaling)
    logit_spec = temperature.evaluation_scale(None if logit_scale == AS_TRAINED else logit_scale,
                                              session.trained_logit_scale())
    logit_label = temperature.label(logit_spec)
    if only_missing:
        todo = missing_cells(session.run, probe, lengths, scaling_label(rope_scaling, session.train_len), logit_label)
    else:
        todo = {length: probe.cells(length) for length in lengths}
    todo = {length: cells for length, cells in todo.items() if cells}
    if not todo:
        return []
    if session.model is None or model is not None:
        session.load_model(device, model)
    pe = session.model.pe
    session.rope_scaling = rope_scaling
    if rope_scaling and (not pe.supports_rope_scaling or session.model.rope_dropped):
        raise UserError(f"--rope-scaling needs a RoPE-family run (an encoding that supports RoPE scaling); "
                        f"{session.run} uses pe={session.pe_name}"
                        + (" with RoPE dropped (DroPE)" if pe.supports_rope_scaling else ""))
    if logit_spec:
        session.model.set_logit_scale(logit_spec)
    probe.prepare(session)
    rows: list[dict] = []
    trained = pe.trained_scaling  # the scaling the model computes as loaded (declared by every encoding)
    if rope_scaling is None and trained:
        pe.set_scaling(None)  # `--rope-scaling none` on a run trained with scaling: the raw model
    try:
        with progress_bar() as bar:
            for length, cells in todo.items():
                if parent_asked():  # a sweep running this job in a worker was stopped: so is its evaluation
                    raise KeyboardInterrupt
                rows += _one_length(probe, session, length, cells, rope_scaling, bar, logit_label)
    finally:
        if rope_scaling or trained:
            pe.set_scaling(trained)
        if logit_spec:
            session.model.set_logit_scale(None)
    return rows


def _one_length(probe: Probe, session: Session, length: int, cells: list[dict], rope_scaling, bar,
                logit_label: str = "none") -> list[dict]:
    spec, scaling = scaling_for_length(rope_scaling, length, session.original_len)
    base = {"pe": session.pe_name, "train_seq_len": session.train_len, "eval_len": length, **scaling,
            "logit_scale": logit_label}
    rows = [{**base, **cell} for cell in cells]
    limit = session.model.max_len()
    if limit is not None and length > limit:
        status = f"not_applicable: {session.pe_name} positions stop at max_len={limit}"
    else:
        status = probe.unavailable(session, length)
    extra: list[tuple[Table, list]] = []
    if status is None:
        task = bar.add_task(f"{probe.label} L={length}", total=None, rate="", info=scaling["rope_scaling"])
        try:
            if spec is not None:
                session.model.pe.set_scaling(spec)
            extra = probe.measure(session, length, rows, Meter(bar, task))
        except (RuntimeError, MemoryError) as exc:  # e.g. out of memory at one length: record it, go on
            status = error_status(exc)
            _free_memory(session.device)
        finally:
            bar.remove_task(task)
    if status is not None:
        for row in rows:
            row["status"] = status
    text = probe.summary(rows) if status is None else status
    scale = "" if logit_label == "none" else f" {logit_label}"
    session.log(escape(f"  L={length:>6} {scaling['rope_scaling']:>8}{scale}: {text}"))
    # Written after every length: a later failure never loses what was computed.
    for table, table_rows in [(probe.table, rows), *extra]:
        if table_rows:
            session.run.merge_rows(table.name, table_rows, table.columns, table.key, sort_key=table.sort_key,
                                   fill=table.defaults)
    return rows


def _free_memory(device) -> None:
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
