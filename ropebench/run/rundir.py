"""The run directory: the one record of a run, and the only interface between commands.

Layout (every name lives here and nowhere else)::

    RUN/config.yaml          the resolved config, written once when the run starts; never rewritten
    RUN/checkpoint.pt        resume state: weights, optimizer, step, RNG (loaded with weights_only=True)
    RUN/model.safetensors    final weights (written when training finishes)
    RUN/final.json           completion marker: final metrics and the versions that produced them
    RUN/metrics.jsonl        one JSON object per logged step
    RUN/eval_length.csv      perplexity by evaluation length (rows merged across eval-length calls)
    RUN/eval_positions.csv   mean loss by position bucket at each evaluated length
    RUN/passkey.csv          passkey accuracy by length and depth
    RUN/error.txt            why the last attempt failed (sweeps), removed when a later attempt starts

Every file is written atomically (a temporary file in the same directory, then ``os.replace``) and readable by
others; result CSVs are merged under a file lock so concurrent commands never lose a row. Torch-free: the
checkpoint's bytes are written by whoever owns torch, through :func:`atomic_write`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ropebench.errors import UserError

CONFIG = "config.yaml"
LEGACY_CONFIG = ".hydra/config.yaml"  # runs made before ropebench kept its own copy
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
FINAL = "final.json"
METRICS = "metrics.jsonl"
EVAL_CSV = "eval_length.csv"
POSITIONS_CSV = "eval_positions.csv"
PASSKEY_CSV = "passkey.csv"
ERROR = "error.txt"
_LOCK = ".lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: Path) -> None:
    """Mode 0666 less the umask, as for any file the user creates (mkstemp and safetensors leave 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write(path: Path, write: Callable) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then move it into place (mode 0644 less
    the umask, like any file the user creates -- mkstemp alone would leave 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def read_csv_rows(path: Path, required: Sequence[str] = (), parse: Callable[[dict], dict | None] | None = None,
                  warn: Callable[[str], None] | None = None) -> list[dict]:
    """Rows of a result CSV. A damaged file never stops a command: a row with more cells than the header or too
    few to reach a required column, one the CSV reader cannot split, or one that ``parse`` (row -> row, or None
    when damaged) rejects is skipped, with one warning naming the file and the lines; a file without a
    ``required`` column, or not text, is skipped whole with one warning. ``warn`` receives each message
    (default: a "warning:" line on stderr)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, bad = [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                _warn(warn, f"skipping '{path}': it has no column {', '.join(missing)}")
                return []
            while True:
                try:
                    raw = next(reader)
                except StopIteration:
                    break
                except csv.Error:
                    bad.append(reader.line_num)
                    continue
                short = any(raw.get(c) is None for c in required)  # fewer cells than a required column needs
                row = None if None in raw or short else parse(raw) if parse else raw
                (bad.append(reader.line_num) if row is None else rows.append(row))
    except (OSError, UnicodeDecodeError) as exc:  # not readable, or not text: nothing in it can be trusted
        _warn(warn, f"skipping '{path}': unreadable ({type(exc).__name__})")
        return []
    if bad:
        lines = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        many = "s" * (len(bad) > 1)
        _warn(warn, f"'{path}': skipped {len(bad)} damaged row{many} (line{many} {lines})")
    return rows


def _warn(warn, message: str) -> None:
    if warn is None:
        import sys

        print(f"warning: {message}", file=sys.stderr)
    else:
        warn(message)


def runs_below(path: Path, is_run: Callable[[Path], bool]) -> list[Path]:
    """The run directories of a sweep directory: its children that are runs (``is_run``), and the grandchildren
    under a child that is not one (sweeps/NAME/DATE/RUN given as sweeps/NAME). Hidden directories are skipped."""
    def subdirs(p: Path) -> list[Path]:
        return sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))

    children = subdirs(Path(path))
    below = [c for c in children if is_run(c)]
    below += [g for c in children if not is_run(c) for g in subdirs(c) if is_run(g)]
    return sorted(below)


def _has_values(required: Sequence[str]) -> Callable[[dict], dict | None]:
    """A row parser for the run's own merges: every required column holds a value (``stride`` may be empty)."""
    return lambda row: None if any(not row[c] and c != "stride" for c in required) else row


class RunDir:
    """One run directory: every file name and every read and write of it."""

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # -- the config: written once --------------------------------------------------------------------------
    def config_path(self) -> Path:
        own = self.path / CONFIG
        return own if own.is_file() or not (self.path / LEGACY_CONFIG).is_file() else self.path / LEGACY_CONFIG

    def has_config(self) -> bool:
        return self.config_path().is_file()

    def read_config(self):
        """The run's resolved config (an OmegaConf DictConfig); a missing or damaged one is one clear line."""
        from omegaconf import OmegaConf

        if not self.path.is_dir():
            raise UserError(f"run directory '{self.path}' does not exist")
        path = self.config_path()
        if not path.is_file():
            raise UserError(f"'{self.path}' is not a ropebench run directory (no {CONFIG})")
        try:
            cfg = OmegaConf.load(path)
        except Exception as exc:
            raise UserError(f"'{path}' is not valid YAML ({type(exc).__name__}); the run's config is damaged") from None
        if not OmegaConf.is_dict(cfg):  # a list or a scalar: nothing to look keys up in
            raise UserError(f"'{path}' is incomplete (no mapping); the run's config is damaged")
        missing = [k for k in ("model", "pe", "data", "train", "eval") if not OmegaConf.is_dict(cfg.get(k))]
        if missing:
            raise UserError(f"'{path}' is incomplete (no {', '.join(missing)}); "
                            "the run's config is damaged")
        return cfg

    def write_config_once(self, container: dict) -> None:
        """Record the config the run starts with. A run directory that already holds one keeps it: the caller
        compares before it gets here, so this never changes a record."""
        import yaml

        if self.has_config():
            return
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(container, sort_keys=False))

    def discard_unstarted(self) -> None:
        """Undo a start that failed before training did anything (no checkpoint, no logged step): remove the
        config it recorded and the files it opened, and the directory itself once empty -- a refused start
        leaves nothing behind. Files that are not a run's are never touched."""
        if (self.path / CHECKPOINT).exists() or self.read_metrics():
            return
        for name in (CONFIG, METRICS, ERROR, _LOCK):
            (self.path / name).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # something else lives there: keep it
            pass

    # -- completion ---------------------------------------------------------------------------------------
    def is_finished(self) -> bool:
        return (self.path / FINAL).is_file() and (self.path / WEIGHTS).is_file()

    def read_final(self) -> dict:
        try:
            return json.loads((self.path / FINAL).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"'{self.path / FINAL}' is unreadable ({type(exc).__name__})") from None

    def write_final(self, final: dict) -> None:
        atomic_write_text(self.path / FINAL, json.dumps(final, indent=2) + "\n")

    # -- metrics ------------------------------------------------------------------------------------------
    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def keep_metrics_through(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint's step: they will be logged again."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))

    def open_metrics(self):
        """Line-buffered append handle for metrics.jsonl (the trainer closes it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return open(self.path / METRICS, "a", buffering=1)

    # -- errors (sweeps) ----------------------------------------------------------------------------------
    def write_error(self, text: str) -> None:
        atomic_write_text(self.path / ERROR, text if text.endswith("\n") else text + "\n")

    def clear_error(self) -> None:
        (self.path / ERROR).unlink(missing_ok=True)

    def read_error(self) -> str | None:
        path = self.path / ERROR
        return path.read_text() if path.is_file() else None

    # -- result tables ------------------------------------------------------------------------------------
    def read_rows(self, name: str, required: Sequence[str] = (), warn=None) -> list[dict]:
        """The rows of one of the run's tables, as strings; a row without a value in a required column is damage."""
        return read_csv_rows(self.path / name, required, _has_values(required), warn)

    def merge_rows(self, name: str, new_rows: list[dict], columns: Sequence[str], key: Sequence[str],
                   sort_key: Callable[[dict], tuple] | None = None, warn=None, defaults: dict | None = None) -> None:
        """Replace rows with the same key, keep every other row, write atomically -- under a lock, so two
        commands merging into one file at once both keep their rows. Malformed old rows are dropped with one
        warning; the new rows are always written. ``defaults``: values of key columns an older file lacks."""
        from filelock import FileLock

        path = self.path / name
        self.path.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path / _LOCK)):
            new_keys = {tuple(str(r[k]) for k in key) for r in new_rows}
            defaults = defaults or {}
            old = [{**defaults, **r} for r in self.read_rows(name, required=[k for k in key if k not in defaults],
                                                             warn=warn)]
            rows = [r for r in old if tuple(r.get(k, "") for k in key) not in new_keys] + list(new_rows)
            if sort_key is not None:
                rows.sort(key=sort_key)
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(path, out.getvalue())
