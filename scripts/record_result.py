"""Copy the small outputs of a finished run or sweep into results/NAME/ with a README that records the exact
command, the commit and the hardware -- so every number shown in the README or an issue has provenance.

    python scripts/record_result.py compare sweeps/compare/DATE --command "ropebench sweep compare seed=0,1" \
        --wall "13m05s" --note "2 CPU cores, nothing else running"

Copies figures (*.png, *.pdf), tables (*.md) and every run's CSV/JSON results (never checkpoints or weights).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import torch

from ropebench.bench.rope_bench import device_name
from ropebench.run.rundir import (
    CONFIG,
    EVAL_CSV,
    FINAL,
    METRICS,
    PASSKEY_CSV,
    POSITIONS_CSV,
    PROBE_CSV,
    TASK_CSV,
    RunDir,
)

SMALL = ("*.png", "*.pdf", "*.md", "*.csv", "*.tex")
TEXT = ("*.yaml", "*.json", "*.jsonl", "*.csv", "*.md", "*.tex")
# Absolute paths of the machine that made a result: under these roots, or the given sources.
_ABSOLUTE = re.compile(r"(?<![\w.~$])/(?:tmp|home|root|work|Users|mnt|scratch|data|var)(?:/[^\s\"',|)\]]*)?")
# A run's result files, named where the run directory's layout is (run/rundir.py).
PER_RUN = (EVAL_CSV, POSITIONS_CSV, PASSKEY_CSV, PROBE_CSV, TASK_CSV, METRICS, FINAL)


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


def _relative(path: str, folder: Path, cache: str) -> str:
    """What a committed result says instead of a path of the machine that made it: the path inside the results
    folder holding the same name (a copied run, an export), ``$ROPEBENCH_CACHE`` for the token cache, else the
    last component alone."""
    clean = path.rstrip("/")
    if cache and (clean == cache or clean.startswith(cache + "/")):
        return "$ROPEBENCH_CACHE" + clean[len(cache):]
    name = Path(clean).name
    for candidate in (f"runs/{name}", name):
        if (folder / candidate).exists():
            return candidate
    return f"<elsewhere>/{name}" if name else "<elsewhere>"


def relativize(folder: Path) -> int:
    """Rewrite every absolute path in the folder's text files as a path relative to the folder (see
    ``_relative``); returns how many files changed. Committed results name no path of the machine that made
    them."""
    cache = os.path.expanduser(os.environ.get("ROPEBENCH_CACHE", "~/.cache/ropebench")).rstrip("/")
    changed = 0
    for pattern in TEXT:
        for f in folder.rglob(pattern):
            text = f.read_text()
            new = _ABSOLUTE.sub(lambda m: _relative(m.group(0), folder, cache), text)
            if new != text:
                f.write_text(new)
                changed += 1
    return changed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("source", type=Path, nargs="*", help="run and/or sweep directories")
    p.add_argument("--command", default="", help="the exact command that produced it (required unless --paths-only)")
    p.add_argument("--wall", default="", help="wall-clock time of the command")
    p.add_argument("--note", default="")
    p.add_argument("--paths-only", action="store_true", help="only rewrite absolute paths in results/NAME")
    args = p.parse_args(argv)
    target = Path("results") / args.name
    if args.paths_only:
        print(f"{target}: {relativize(target)} files with absolute paths rewritten")
        return
    if not args.source or not args.command:
        p.error("give the run or sweep directories and --command")
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
    relativize(target)
    readme = target / "README.md"
    body = readme.read_text() if readme.is_file() else f"# {args.name}\n"
    body += (f"\n## Provenance\n\n- command: `{args.command}`\n- commit: {commit()}\n- hardware: {hardware()}\n"
             + (f"- wall-clock: {args.wall}\n" if args.wall else "") + (f"- note: {args.note}\n" if args.note else ""))
    readme.write_text(body)
    print(target)


if __name__ == "__main__":
    main()
