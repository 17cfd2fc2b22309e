"""One exception type for mistakes a user can fix, and the one place where any exception a user can act on becomes
a single line: the CLI prints it instead of a traceback.

* ``UserError``: bad input (the message names the bad value and what is allowed), exit code 2;
* ``OSError``: the file system said no (full, read-only, a path too long, a directory where a file goes), exit
  code 1, naming the path and the reason;
* an OmegaConf error (an interpolation that does not resolve, a key missing from a config): exit code 2;
* ``MemoryError`` and CUDA's out-of-memory error: exit code 1, saying what to make smaller.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input: the message names the bad value and what is allowed."""


# errno -> what it means here, in the words a user acts on.
_OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this process (a file-size limit, `ulimit -f`?)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (an immutable or protected file?)",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "a directory is there, where a file belongs",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "directory not empty",
    errno.EIO: "input/output error (a failing disk or network file system?)",
}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SHOWN_PATH = 160  # a path longer than this is shown by its two ends


def _shown(path) -> str:
    text = str(path)
    return text if len(text) <= _SHOWN_PATH else f"{text[:60]}…{text[-90:]}"


def os_error_line(exc: OSError) -> str:
    """``'PATH': reason`` for a file-system error, with what to do when the disk is full."""
    reason = _OS_REASONS.get(exc.errno) or exc.strerror or str(exc) or type(exc).__name__
    where = f"'{_shown(exc.filename)}': " if exc.filename else ""
    hint = "; free some space and run the command again (what was already written is kept)" if exc.errno in _FULL \
        else ""
    return f"{where}{reason}{hint}"


def config_error_line(exc: Exception) -> str:
    """An OmegaConf error (``${oc.env:UNSET}``, ``${bogus:1}``, a missing key) on one line, naming the key."""
    text = str(getattr(exc, "msg", None) or exc).strip().splitlines()
    key = getattr(exc, "full_key", None)
    where = f" (config key '{key}')" if key else ""
    return f"config: {text[0] if text else type(exc).__name__}{where}"


def _file_system_cause(exc: BaseException) -> OSError | None:
    """The OSError of a full or read-only disk that ``exc`` was raised from (``raise ... from``), if any."""
    seen = 0
    while exc.__cause__ is not None and seen < 8:
        exc, seen = exc.__cause__, seen + 1
        if isinstance(exc, OSError) and exc.errno in (*_FULL, errno.EROFS, errno.EACCES, errno.EPERM):
            return exc
    return None


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def describe(exc: BaseException) -> tuple[str, int] | None:
    """The one line and the exit code for an exception a user can act on; None for a bug (keep its traceback)."""
    if isinstance(exc, UserError):
        return str(exc), 2
    if isinstance(exc, OSError):
        return os_error_line(exc), 1
    wrapped = _file_system_cause(exc)
    if wrapped is not None:  # a library's own error raised from the file system's (datasets, safetensors)
        return os_error_line(wrapped), 1
    if _out_of_memory(exc):
        detail = str(exc).strip().splitlines()
        return (f"out of memory{f' ({detail[0][:200]})' if detail else ''}; use smaller sizes (train.batch_size, "
                "train.seq_len, the model, --lengths or --batch-size)"), 1
    if type(exc).__module__.split(".")[0] == "omegaconf":
        return config_error_line(exc), 2
    return None


def user_errors(fn):
    """Decorator for CLI commands: an error a user can act on (``describe``) becomes one line on stderr and its exit
    code, no traceback; a Ctrl-C that reaches the command (a second press, or one outside training) is one line and
    exit code 130."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            import typer

            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            known = describe(exc)
            if known is None:  # a bug (or typer's own Exit): as it is
                raise
            import typer

            typer.echo(f"error: {known[0]}", err=True)
            raise typer.Exit(known[1]) from None

    return wrapper


def choose(kind: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a UserError that lists them."""
    choices = sorted(choices)
    if value not in choices:
        raise UserError(f"unknown {kind} '{value}'; choose one of: {', '.join(choices)}")
    return value
