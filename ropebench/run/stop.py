"""One Ctrl-C (or a scheduler's SIGTERM) stops cleanly: the trainer checkpoints at the next step boundary.

The request outlives the job that received it: the jobs of a sweep run one after another in one process, so
``stop_requested()`` tells the next job not to start and the sweep ends after one press. A second press
gives up at once.
"""

from __future__ import annotations

import signal

_requested = False


def stop_requested() -> bool:
    return _requested


def clear_stop_request() -> None:
    global _requested
    _requested = False


class StopFlag:
    """SIGINT or SIGTERM sets ``stop``; the training loop checks it at every step."""

    def __init__(self):
        self.stop = False

    def __enter__(self):
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        global _requested
        if self.stop:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop = _requested = True

    def __exit__(self, *exc):
        for sig, handler in (self._previous or {}).items():
            signal.signal(sig, handler)
