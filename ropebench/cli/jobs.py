"""Hydra task functions: what one job does, with failures recorded in its run directory instead of raised,
so one failed job never stops a sweep (Hydra's default launcher runs all jobs in one process)."""

from __future__ import annotations

import gc
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig

from ropebench.cli.hydra_app import output_dir
from ropebench.errors import describe
from ropebench.progress import job
from ropebench.run.rundir import CHECKPOINT, ERROR, RunDir, resume_command
from ropebench.run.stop import quiet_worker, stop_requested

#: (run_dir, status, message) of every job this process ran; status "refused" is a user error (bad input, a
#: directory holding another experiment), "failed" a crash
outcomes: list[tuple[Path, str, str]] = []


def evaluate_after_training(run_dir: Path, model, logger, log) -> None:
    """`eval.after_train`: perplexity at the default lengths (passkey accuracy for data=passkey, task accuracy for
    data=task; the retrieval probes with eval.probes), with the model still in memory; the results are mirrored to
    wandb. Without a model (a finished run continued), only what an interrupted evaluation left missing is
    measured, loading the weights only if something is."""
    from ropebench.eval.passkey import passkey_accuracy, passkey_cells
    from ropebench.eval.probes import probe_accuracy, wants_probes

    cfg = RunDir(run_dir).read_config()
    missing = model is None

    def mirror(rows: list[dict], name: str = "eval_length") -> None:
        if logger is not None:
            logger.log_eval_curve(rows, name)

    if cfg.data.source == "task":
        from ropebench.eval.task import task_accuracy

        mirror(task_accuracy(run_dir, model=model, log=log, only_missing=missing), "task")
        return
    if cfg.data.source != "passkey":
        from ropebench.eval.perplexity import eval_length

        mirror(eval_length(run_dir, model=model, log=log, only_missing=missing))
    if cfg.data.source == "passkey" or cfg.eval.get("passkey"):
        mirror(passkey_accuracy(run_dir, model=model, log=log, only_missing=missing, **passkey_cells(cfg)), "passkey")
    if wants_probes(cfg):
        mirror(probe_accuracy(run_dir, model=model, log=log, only_missing=missing), "probe")


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def given_keys() -> set[str]:
    """The config keys this job's command line set (the sweep's values included, the sweep config's own not)."""
    from hydra.core.hydra_config import HydraConfig

    from ropebench.cli.hydra_app import keys_of

    return keys_of(list(HydraConfig.get().overrides.task))


def _failure(run: RunDir, exc: Exception) -> tuple[str, str]:
    """(status, one line) of a job that raised: "refused" for bad input, "failed" for the rest. A sweep keeps the
    line in the job's error.txt (a single run prints it); a bug keeps its traceback there too."""
    known = describe(exc)
    if known is None:  # a bug or a crash: keep the traceback beside the run, report one line
        message = str(exc).splitlines()[0] if str(exc) else ""
        line, status, record = (f"{type(exc).__name__}: {message} (traceback in {run / ERROR})", "failed",
                                traceback.format_exc())
    else:
        line, status, record = known[0], "refused" if known[1] == 2 else "failed", known[0]
        if isinstance(exc, OSError) and (run / CHECKPOINT).is_file() and not run.is_finished():
            line += f"; its last checkpoint is kept: continue with `{resume_command(run.path)}`"
    if known is None or _in_sweep():
        try:
            run.write_error(record)
        except OSError:  # the disk that failed the job may refuse this too; the line is printed all the same
            pass
    return status, line


def train_job(cfg: DictConfig) -> None:
    from ropebench.run.lifecycle import OtherExperiment, start

    run = RunDir(output_dir())
    quiet_worker()  # in a sweep's worker process: a terminal's Ctrl-C reaches this job through the stop file
    if stop_requested():  # one Ctrl-C stops the whole sweep, not just the job that was running
        outcomes.append((run.path, "skipped", "not started: the sweep was stopped"))
        return
    try:
        # Side by side, jobs interleave their lines: in a sweep each line names its run.
        with job(run.path.name if _in_sweep() else None):
            result = start(cfg, run.path, before_training=run.clear_error, after_training=evaluate_after_training,
                           given=given_keys())
        outcomes.append((run.path, result.get("status", "finished"), ""))
    except OtherExperiment as exc:  # not this job's directory to write in
        outcomes.append((run.path, "refused", str(exc)))
    except Exception as exc:
        outcomes.append((run.path, *_failure(run, exc)))
    finally:
        # Jobs of a sweep share this process: release what the last one held before the next starts.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()
