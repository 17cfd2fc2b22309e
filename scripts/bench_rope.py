"""Time every usable RoPE backend (see `ropebench bench rope --help`)."""

from ropebench.bench.cli import run_rope

run_rope()
