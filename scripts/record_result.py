"""Copy the small outputs of a finished run or sweep into results/NAME/ with a README that records the exact
command, the commit and the hardware -- so every number shown in the README or an issue has provenance.

    python scripts/record_result.py compare sweeps/compare/DATE --command "ropebench sweep compare seed=0,1" \
        --wall "13m05s" --note "2 CPU cores, nothing else running"

Copies figures (*.png, *.pdf), tables (*.md) and every run's CSV/JSON results (never checkpoints or weights).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from ropebench.bench.rope_bench import device_name
from ropebench.run.rundir import CONFIG, RunDir

SMALL = ("*.png", "*.pdf", "*.md", "*.csv", "*.tex")
PER_RUN = ("eval_length.csv", "eval_positions.csv", "passkey.csv", "metrics.jsonl", "final.json")


def hardware() -> str:
    gpu = device_name(torch.device("cuda")) if torch.cuda.is_available() else "none"
    return (f"{device_name(torch.device('cpu'))}; GPU: {gpu}; Python {platform.python_version()}; "
            f"torch {torch.__version__}; {platform.system()} {platform.release()}")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("source", type=Path, nargs="+", help="run and/or sweep directories")
    p.add_argument("--command", required=True, help="the exact command that produced it")
    p.add_argument("--wall", default="", help="wall-clock time of the command")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    target = Path("results") / args.name
    target.mkdir(parents=True, exist_ok=True)
    for pattern in SMALL:
        for src in args.source:
            for f in src.glob(pattern):
                shutil.copy(f, target / f.name)
    runs = sorted({p.parent for src in args.source for p in src.rglob("final.json")})
    for run in runs:
        dest = target / "runs" / run.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in PER_RUN:
            if (run / name).is_file():
                shutil.copy(run / name, dest / name)
        # Kept where a run directory keeps it, so `ropebench table/plot results/NAME/runs` work on the copy.
        config = RunDir(run).config_path()
        if config.is_file():
            shutil.copy(config, dest / CONFIG)
    readme = target / "README.md"
    body = readme.read_text() if readme.is_file() else f"# {args.name}\n"
    body += (f"\n## Provenance\n\n- command: `{args.command}`\n- commit: {commit()}\n- hardware: {hardware()}\n"
             + (f"- wall-clock: {args.wall}\n" if args.wall else "") + (f"- note: {args.note}\n" if args.note else ""))
    readme.write_text(body)
    print(target)


if __name__ == "__main__":
    main()
