"""Time training steps per position encoding (see `ropebench bench train --help`)."""

from ropebench.bench.cli import run_train

run_train()
