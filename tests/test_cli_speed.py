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


@pytest.mark.parametrize("command", [[], ["eval-length"]])
def test_help_is_quick(command):
    """Loosely: importing torch and Hydra took 3-7 s. The CPU time is the measure that does not depend on what else
    the machine runs; the wall time (the faster of two starts) is allowed more on a machine busier than its
    cores."""
    import resource

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wall, cpu = float("inf"), float("inf")
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ropebench", *command, "--help"], capture_output=True, text=True,
                             timeout=120, env=env)
        wall = min(wall, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert out.returncode == 0, out.stderr
    busy = os.getloadavg()[0] / (os.cpu_count() or 1) > 2
    assert cpu < 1.5, f"`ropebench {' '.join(command)} --help` used {cpu:.2f} s of CPU"
    assert wall < (10.0 if busy else 3.0), f"`ropebench {' '.join(command)} --help` took {wall:.2f} s"


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


def test_the_logit_scale_help_lists_the_evaluation_scales():
    from ropebench.cli.passkey import LOGIT_SCALES
    from ropebench.core.temperature import AT_EVALUATION

    assert LOGIT_SCALES == AT_EVALUATION


def test_the_probe_options_list_the_registry_s_tasks_and_defaults():
    from ropebench.cli import probe as cli_probe
    from ropebench.data.probes import TASKS
    from ropebench.eval import probes

    assert cli_probe.TASKS == tuple(TASKS)
    assert (cli_probe.DEFAULT_TASKS, cli_probe.DEFAULT_TRIALS, cli_probe.DEFAULT_CANDIDATES) == (
        probes.DEFAULT_TASKS, probes.DEFAULT_TRIALS, probes.DEFAULT_CANDIDATES)
