"""One Ctrl-C (or a scheduler's SIGTERM) stops cleanly: the trainer checkpoints at the next step boundary.

The request outlives the job that received it: the jobs of a sweep run one after another in one process, so
``stop_requested()`` tells the next job not to start and the sweep ends after one press. A second press
gives up at once.

Jobs running side by side in worker processes (``launcher=auto``) hear a Ctrl-C typed in a terminal themselves
(it reaches the whole process group), but not a signal sent to the sweep's own process alone -- by ``kill``,
``timeout`` or a scheduler (SLURM sends SIGTERM before a time limit). So the sweep's process, whose ``StopFlag``
is made with ``forward=True``, also leaves a stop file named by its process id, and every process checks the
file of its parent: a worker stops at its next step boundary, and a job not yet started is skipped.

A Ctrl-C typed in a terminal would also raise KeyboardInterrupt in a worker wherever it happens to be -- booting,
importing, between two jobs -- and joblib answers a job's exception by killing every other worker, losing
their checkpoints. So a worker ignores SIGINT outside the scopes that handle it (``quiet_worker``): the sweep's
own process hears the same Ctrl-C and asks through the stop file, and the scopes that stop at once (an
evaluation) still see it directly.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

_requested = False
#: set by a forwarding StopFlag: the process id of the sweep whose workers read its stop file
_SWEEP_PID = "ROPEBENCH_SWEEP_PID"


def _stop_file(pid: int) -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"ropebench-stop-{uid}-{pid}"


def parent_asked() -> bool:
    """Whether the process that started this one (a sweep running jobs in workers) asked them to stop."""
    return _stop_file(os.getppid()).exists()


def stop_requested() -> bool:
    return _requested or parent_asked()


def quiet_worker() -> None:
    """In a worker process of a sweep (its parent made a forwarding StopFlag), ignore SIGINT from now on outside
    StopFlag scopes: the sweep's process forwards the same Ctrl-C through the stop file (module docstring)."""
    if os.environ.get(_SWEEP_PID) == str(os.getppid()):
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: leave signals alone
            pass


def clear_stop_request() -> None:
    global _requested
    _requested = False
    _stop_file(os.getpid()).unlink(missing_ok=True)


class StopFlag:
    """SIGINT or SIGTERM sets ``stop``; the training loop checks it at every step. ``forward``: also ask the
    worker processes this one started (the stop file). ``at_once``: the first signal interrupts at once
    (KeyboardInterrupt), for work with no step boundary to stop at (an evaluation after training)."""

    def __init__(self, forward: bool = False, at_once: bool = False):
        self._stop = False
        self.forward, self.at_once = forward, at_once

    @property
    def stop(self) -> bool:
        return self._stop or parent_asked()

    @stop.setter
    def stop(self, value: bool) -> None:
        self._stop = value

    def __enter__(self):
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        if self.forward:
            os.environ[_SWEEP_PID] = str(os.getpid())  # read by the workers this process starts
        return self

    def _handle(self, signum, frame):
        global _requested
        again = self._stop
        self._stop = _requested = True
        if self.forward:
            _stop_file(os.getpid()).touch()
        if again or self.at_once:  # a second Ctrl-C (or no step to stop at): give up at once
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in (self._previous or {}).items():
            signal.signal(sig, handler)
        if self.forward:
            _stop_file(os.getpid()).unlink(missing_ok=True)
            os.environ.pop(_SWEEP_PID, None)
