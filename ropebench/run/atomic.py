"""Writing files so that a reader sees the old file or the new one, never part of one: a temporary file in the
same directory, then ``os.replace``; readable by others (the umask's read bits); a full disk or a file-size limit
named with the file it refused. Torch-free: a checkpoint's bytes are written by whoever owns torch, through
:func:`atomic_write`. ``ropebench.run.rundir`` re-exports these (every file name lives there)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: Path) -> None:
    """Mode 0666 less the umask, as for any file the user creates (mkstemp and safetensors leave 0600)."""
    os.chmod(path, 0o666 & ~_umask())


class _WriteErrors:
    """A binary file that remembers the first OSError its writes raised: a writer that turns it into its own
    error (torch.save's zip writer reports a full disk as "unexpected pos ...") cannot hide why it failed."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _about(exc: OSError, path: Path) -> OSError:
    """The same error, naming the file the user asked for instead of its temporary name."""
    return type(exc)(exc.errno, exc.strerror, str(path)) if exc.errno is not None else exc


def atomic_write(path: Path, write: Callable) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path`` (a unique name: no fixed name that a planted
    link could redirect), then move it into place (mode 0644 less the umask, like any file the user creates --
    mkstemp alone would leave 0600). A file-system error names ``path``, however the writer reported it; the
    previous file is kept."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _about(exc, path) from None
    recorder = None
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _WriteErrors(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = recorder.error if recorder is not None and recorder.error is not None else exc
        if isinstance(cause, OSError):
            raise _about(cause, path) from None
        raise


def space_problem(directory: Path, size: int) -> OSError | None:
    """The file-system error that writing ``size`` bytes into ``directory`` runs into -- a full disk or this
    process's file-size limit (`ulimit -f`) -- or None. For writers that word those errors their own way."""
    import resource

    try:
        stat = os.statvfs(directory)
        if stat.f_bavail * stat.f_frsize < size:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    except OSError:
        pass
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < size:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(directory))
    return None


def atomic_write_file(path: Path, write_to: Callable[[str], None], size: int) -> None:
    """``atomic_write`` for a writer that takes a file name (safetensors): ``write_to(temporary_name)``, then the
    move into place. ``size``: about how many bytes it writes, to tell a full disk from other failures."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise _about(exc, path) from None
    try:
        write_to(tmp)
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        problem = exc if isinstance(exc, OSError) else space_problem(path.parent, size)
        Path(tmp).unlink(missing_ok=True)
        if problem is not None:
            raise _about(problem, path) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
