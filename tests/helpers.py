"""Small builders shared by tests, and the faults they inject (a read-only directory, a full disk)."""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ropebench.core.model import GPT
from ropebench.core.pe import registry
from ropebench.run.config import ModelConfig


def pe_config(name: str, **overrides):
    cfg = OmegaConf.structured(registry()[name].config_cls())
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def tiny_model(name: str, n_layer=2, n_head=4, n_embd=32, train_seq_len=16, seed=0, **pe_overrides) -> GPT:
    torch.manual_seed(seed)
    model_cfg = OmegaConf.structured(ModelConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd))
    return GPT(model_cfg, pe_config(name, **pe_overrides), vocab_size=257, train_seq_len=train_seq_len).eval()


def refused(result, *expected: str, code: int = 2, logs: bool = False) -> str:
    """The exit code, one error line (the last; with ``logs``, progress lines may come before it) holding each
    expected text, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and (logs or lines == errors), result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@contextlib.contextmanager
def read_only(path):
    """The directory ``path`` refuses every new file, root's included: immutable (``chattr +i``) where the file system
    allows it, else a read-only bind mount; for a user other than root, its mode. Skips where none can be had."""
    path = Path(path)
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if _run("chattr", "+i", path):
        try:
            yield
        finally:
            _run("chattr", "-i", path)
        return
    if _run("mount", "--bind", path, path):
        try:
            if not _run("mount", "-o", "remount,ro,bind", path, path):
                pytest.skip("no way to make a directory read-only for root here (chattr +i, a read-only mount)")
            yield
        finally:
            _run("umount", path)
        return
    pytest.skip("no way to make a directory read-only for root here (chattr +i, a read-only mount)")


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """No file this process writes may grow past ``nbytes`` (RLIMIT_FSIZE, `ulimit -f`, which binds root too): a
    write past it fails with EFBIG as a write on a full disk fails with ENOSPC (Python ignores SIGXFSZ)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def small_disk(path, size: str = "4m"):
    """A tmpfs of ``size`` mounted at ``path`` (a full disk that fills for real); skips where mounting is not
    permitted."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path):
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        yield path
    finally:
        _run("umount", "-l", path)


def _run(*args) -> bool:
    try:
        return subprocess.run([str(a) for a in args], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def invoke(*args, **kwargs):
    """The `ropebench` command line, in this process (typer's CliRunner); arguments may be paths."""
    from typer.testing import CliRunner

    from ropebench.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def ok(result):
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (lock files aside: they are what a command opens, not what it
    writes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}
