"""Shared fixtures: a private cache, a small real-text corpus (files of the standard library), a tiny model."""

import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

# Before anything imports datasets or wandb: offline, and caches inside the test session.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="ropebench-tests-"))
os.environ["ROPEBENCH_CACHE"] = str(_SESSION_TMP / "cache")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_SILENT"] = "true"
# `launcher=auto` (the main job's) runs one job at a time in this process, as the tests of sweeps expect;
# tests/test_launchers.py checks the side-by-side default itself.
os.environ["ROPEBENCH_LOCAL_JOBS"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """40 real Python source files (4-40 kB) copied from the standard library: real text, tokenized in a blink."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if 4_000 <= p.stat().st_size <= 40_000)[:40]
    target = _SESSION_TMP / "corpus"
    target.mkdir(exist_ok=True)
    for f in files:
        shutil.copy(f, target / f.name)
    return target


@pytest.fixture(scope="session")
def tiny_overrides(corpus_dir) -> list[str]:
    return ["data=text_files", f"data.paths=[{corpus_dir}]", "model.n_layer=1", "model.n_embd=32",
            "model.n_head=2", "train.seq_len=16", "train.steps=6", "train.batch_size=4", "train.log_interval=2",
            "train.eval_interval=3", "train.eval_batches=2", "train.warmup_steps=2", "train.ckpt_interval=3",
            "eval.max_tokens=512"]


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
