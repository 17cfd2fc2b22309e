"""Benchmarks: RoPE kernels against the bandwidth floor, training-step and evaluation cost per position encoding,
and the whole GPU check in one command.

Run them as ``ropebench bench rope|train|eval|all|report`` or ``scripts/bench_rope.py`` / ``scripts/bench_train.py``
/ ``scripts/gpu_check.sh``; the logic lives here so an installed ropebench can run them. Importing the package
imports no torch (the CLI mounts ``ropebench.bench.cli`` on every start): the benchmarks load on first use.
"""

__all__ = ["bench_eval", "bench_rope", "bench_train"]
_MODULES = {"bench_eval": "eval_bench", "bench_rope": "rope_bench", "bench_train": "train_bench"}


def __getattr__(name: str):
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(f"ropebench.bench.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'ropebench.bench' has no attribute {name!r}")
