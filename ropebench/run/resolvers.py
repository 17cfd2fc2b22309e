"""OmegaConf resolvers the YAML files interpolate: ``${ropebench_subdir:}``, ``${ropebench_core_encodings:}``,
``${ropebench_task_window:...}``, ``${ropebench_local_jobs:}`` and ``${ropebench_job_threads:}``. Registered by
ropebench.run.config when it is imported; each one imports what it needs when it is resolved."""

from __future__ import annotations

from ropebench.errors import UserError


def register_resolvers() -> None:
    """Register the resolvers (idempotent)."""
    from omegaconf import OmegaConf

    # A sweep job whose overrides are all shared would get an empty sub-directory name (the sweep dir itself).
    if not OmegaConf.has_resolver("ropebench_subdir"):
        OmegaConf.register_new_resolver("ropebench_subdir", lambda name: name or "run")
    if not OmegaConf.has_resolver("ropebench_core_encodings"):
        OmegaConf.register_new_resolver("ropebench_core_encodings", _core_encodings)
    if not OmegaConf.has_resolver("ropebench_task_window"):
        OmegaConf.register_new_resolver("ropebench_task_window", _task_window)
    if not OmegaConf.has_resolver("ropebench_local_jobs"):
        OmegaConf.register_new_resolver("ropebench_local_jobs", local_jobs)
        OmegaConf.register_new_resolver("ropebench_job_threads", lambda: 1 if local_jobs() > 1 else 0)


def local_jobs() -> int:
    """How many sweep jobs `launcher=auto` runs side by side: ROPEBENCH_LOCAL_JOBS if set, else one per CPU core
    this process may use, or one when a GPU is there (jobs would share it)."""
    import os

    import torch

    if os.environ.get("ROPEBENCH_LOCAL_JOBS", "").strip():
        try:
            return max(1, int(os.environ["ROPEBENCH_LOCAL_JOBS"]))
        except ValueError:
            raise UserError(f"ROPEBENCH_LOCAL_JOBS must be a positive integer, got "
                            f"'{os.environ['ROPEBENCH_LOCAL_JOBS']}'") from None
    if torch.cuda.is_available():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _task_window(task: str, length) -> int:
    """``${ropebench_task_window:${data.task},${data.task_len}}``: the train.seq_len that exactly holds the
    task's longest training instance (a sweep over tasks gives each task its own window)."""
    from ropebench.data.tasks import get_task, window

    return window(task, int(length or 0) or get_task(task).default_len)


def _core_encodings() -> str:
    from ropebench.core.pe import CORE_ENCODINGS

    return ",".join(CORE_ENCODINGS)
