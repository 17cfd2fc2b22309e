"""The command line starts fast: `ropebench --help` and every command's --help import no torch, Hydra or
transformers (they are imported inside the commands that need them)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "hydra", "transformers", "datasets", "matplotlib", "wandb")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_importing_the_cli_imports_no_heavy_library():
    out = _python("import sys, ropebench.cli.app; print(','.join(m for m in "
                  f"{HEAVY!r} if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"


@pytest.mark.parametrize("command", [[], ["eval-length"], ["passkey"], ["bench", "rope"]])
def test_help_is_quick(command):
    """Loosely (a shared, busy machine): well under the 3-7 s that importing torch and Hydra took."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    best = float("inf")
    for _ in range(2):  # the faster of two: a first start may pay for a cold disk cache
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ropebench", *command, "--help"], capture_output=True, text=True,
                             timeout=120, env=env)
        best = min(best, time.perf_counter() - start)
        assert out.returncode == 0, out.stderr
    assert best < 3.0, f"`ropebench {' '.join(command)} --help` took {best:.2f} s"


_EVERY_HELP = """
import sys
import typer.main
from ropebench.cli.app import app

group = typer.main.get_command(app)
bench = group.commands["bench"].commands
for args in [[n] for n in group.commands if n != "bench"] + [["bench", n] for n in bench]:
    try:
        group.main(args=[*args, "--help"], prog_name="ropebench", standalone_mode=False)
    except SystemExit:
        pass
print("imported:", ",".join(m for m in HEAVY if m in sys.modules), file=sys.stderr)
"""


def test_every_command_help_imports_no_torch():
    """Each command's --help, run in one process through click, leaves torch and the others unimported."""
    out = _python(f"HEAVY = {HEAVY!r}\n{_EVERY_HELP}")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "imported:", out.stderr[-500:]
    assert "Usage: ropebench bench report" in out.stdout  # every help was printed


def test_the_scaling_help_lists_the_registry_s_types():
    from ropebench.cli.passkey import SCALING_TYPES
    from ropebench.core.rope.freqs import SCALING_NAMES

    assert SCALING_TYPES == SCALING_NAMES
