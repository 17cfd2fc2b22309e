"""Benchmarks: RoPE kernels against the bandwidth floor, training-step and evaluation cost per position encoding,
and the whole GPU check in one command.

Run them as ``ropebench bench rope|train|eval|all|report`` or ``scripts/bench_rope.py`` / ``scripts/bench_train.py``
/ ``scripts/gpu_check.sh``; the logic lives here so an installed ropebench can run them.
"""

from ropebench.bench.eval_bench import bench_eval
from ropebench.bench.rope_bench import bench_rope
from ropebench.bench.train_bench import bench_train

__all__ = ["bench_eval", "bench_rope", "bench_train"]
