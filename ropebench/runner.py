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
from ropebench.run.rundir import RunDir
from ropebench.run.stop import stop_requested

#: (run_dir, status, message) of every job this process ran
outcomes: list[tuple[Path, str, str]] = []


def train_job(cfg: DictConfig) -> None:
    from ropebench.run.lifecycle import OtherExperiment, start

    run = RunDir(output_dir())
    if stop_requested():  # one Ctrl-C stops the whole sweep, not just the job that was running
        outcomes.append((run.path, "skipped", "not started: the sweep was stopped"))
        return
    try:
        result = start(cfg, run.path, before_training=run.clear_error)
        outcomes.append((run.path, result.get("status", "finished"), ""))
    except OtherExperiment as exc:  # not this job's directory to write in
        outcomes.append((run.path, "failed", str(exc)))
    except UserError as exc:
        run.write_error(str(exc))
        outcomes.append((run.path, "failed", str(exc)))
    except Exception as exc:  # a bug or a crash: keep the traceback beside the run, report one line
        run.write_error(traceback.format_exc())
        message = str(exc).splitlines()[0] if str(exc) else ""
        outcomes.append((run.path, "failed", f"{type(exc).__name__}: {message} (traceback in {run / 'error.txt'})"))
    finally:
        # Jobs of a sweep share this process: release what the last one held before the next starts.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()
