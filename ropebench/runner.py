"""Hydra task functions: what one job does, with failures recorded in its run directory instead of raised,
so one failed job never stops a sweep (Hydra's default launcher runs all jobs in one process)."""

from __future__ import annotations

import gc
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig

from ropebench.errors import UserError
from ropebench.hydra_app import output_dir
from ropebench.rundir import atomic_write_text

ERROR_FILE = "error.txt"
#: (run_dir, status, message) of every job this process ran
outcomes: list[tuple[Path, str, str]] = []


def train_job(cfg: DictConfig) -> None:
    from ropebench.train import train

    run_dir = output_dir()
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        result = train(cfg, run_dir)
        outcomes.append((run_dir, result.get("status", "finished"), ""))
    except UserError as exc:
        atomic_write_text(run_dir / ERROR_FILE, f"{exc}\n")
        outcomes.append((run_dir, "failed", str(exc)))
    except Exception as exc:  # a bug or a crash: keep the traceback beside the run, report one line
        atomic_write_text(run_dir / ERROR_FILE, traceback.format_exc())
        outcomes.append((run_dir, "failed", f"{type(exc).__name__}: {exc} (traceback in {run_dir / ERROR_FILE})"))
    finally:
        # Jobs of a sweep share this process: release what the last one held before the next starts.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()
