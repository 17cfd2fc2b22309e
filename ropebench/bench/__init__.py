"""Benchmarks: RoPE kernels against the bandwidth floor, and training-step cost per position encoding.

Run them as ``ropebench bench rope`` / ``ropebench bench train`` or ``scripts/bench_rope.py`` /
``scripts/bench_train.py``; the logic lives here so an installed ropebench can run them.
"""

from ropebench.bench.rope_bench import bench_rope
from ropebench.bench.train_bench import bench_train

__all__ = ["bench_rope", "bench_train"]
