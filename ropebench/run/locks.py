"""One command at a time in a directory: the lock a command holds on the run directory (or ``--out``) it writes.

A command that writes a run -- ``train``, ``resume``, a Hugging Face evaluation into ``--out``, ``export-hf`` into
its OUT -- holds the directory's lock exclusively; one that only adds result rows or reads it whole (``eval-length``,
``passkey``, the source run of ``export-hf``) holds it shared, since row merges lock by themselves
(``RunDir.merge_rows``). A command that cannot have the lock at once is refused in one line: two ``train``s into one
new directory, two ``resume``s of one run, or a ``resume`` under an evaluation never interleave their writes.

The lock is ``flock`` on a file in (or beside) the directory: the operating system releases it when its process
ends, however it ends, so a crashed command never leaves a directory locked. Within one process the lock is
re-entrant (training holds its run, and its after-training evaluation asks for it again).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ropebench.errors import UserError

try:
    import fcntl
except ImportError:  # not a POSIX system: no locking (ropebench's commands then trust their user)
    fcntl = None

#: lock file (resolved) -> [file descriptor, shared, how many holders in this process]
_held: dict[str, list] = {}


def _open_locked(lock_file: Path, shared: bool) -> int | None:
    """A descriptor of ``lock_file`` locked as asked, or None when another process holds it. A lock file removed
    (by its last holder) between open and lock is opened again, so that two commands never lock two files."""
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def directory_lock(lock_file: Path, directory: Path, shared: bool = False, remove: bool = False):
    """Hold ``lock_file`` (for ``directory``: the name the refusal uses) while the block runs: shared (readers) or
    exclusive (the one writer). ``remove``: delete the lock file afterwards when no other process holds it (a lock
    beside the directory, so none is left there)."""
    if fcntl is None:
        yield
        return
    lock_file = Path(lock_file)
    key = str(lock_file.resolve())
    held = _held.get(key)
    if held is not None and (shared or not held[1]):  # this process has it already, as much as asked
        held[2] += 1
        try:
            yield
        finally:
            held[2] -= 1
        return
    if held is not None:  # held shared here, wanted exclusive: only if no other process reads it
        try:
            fcntl.flock(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(_busy(directory)) from None
        held[1] = False
        try:
            yield
        finally:
            fcntl.flock(held[0], fcntl.LOCK_SH)
            held[1] = True
        return
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(lock_file, shared)
    except OSError as exc:
        if not shared:  # the directory the command was to write, not the lock's own file name
            raise OSError(exc.errno, exc.strerror, str(directory)) from None
        yield  # a directory no one can write to (read-only): there is no writer to exclude
        return
    if fd is None:
        raise UserError(_busy(directory))
    _held[key] = [fd, shared, 1]
    try:
        yield
    finally:
        del _held[key]
        _release(fd, lock_file, remove)


def _release(fd: int, lock_file: Path, remove: bool) -> None:
    try:
        if remove:
            try:  # only the last holder removes it: a reader beside us keeps its file
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock_file.unlink(missing_ok=True)
            except (BlockingIOError, OSError):
                pass
    finally:
        os.close(fd)


def _busy(directory: Path) -> str:
    return (f"'{directory}' is in use by another ropebench command (training, continuing, evaluating or exporting "
            "it); wait for that command to finish, or use another directory")


def lock_beside(directory: Path, shared: bool = False):
    """The lock of a directory that a command creates whole (an export's OUT, a Hugging Face model's --out): a
    hidden file beside it, so that the directory itself appears only with its content; removed afterwards."""
    directory = Path(directory)
    return directory_lock(directory.parent / f".{directory.name}.lock", directory, shared, remove=True)
