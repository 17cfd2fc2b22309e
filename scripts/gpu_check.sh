#!/usr/bin/env bash
# Every GPU measurement listed in results/kernels/NOTES.md, in one command:
#
#     scripts/gpu_check.sh                    # writes results/kernels/*.json, tables.md, gpu_check_<gpu>.json
#     scripts/gpu_check.sh /tmp/kernels       # somewhere else
#     scripts/gpu_check.sh results/kernels --only train_gpt2 --no-tests   # extra options of `ropebench bench all`
#
# Needs a CUDA build of torch and a GPU (pip install -e '.[dev,triton]'; pip install liger-kernel for its rows).
# On a machine without CUDA it stops at once with one line saying so. A failing step is recorded in
# gpu_check_<gpu>.json and the others still run; the exit status is non-zero when any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/kernels}"
shift $(( $# > 0 ? 1 : 0 ))
python=python
[ -x .venv/bin/python ] && python=.venv/bin/python
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: no CUDA GPU visible to torch here; run it on a machine with an NVIDIA GPU and a CUDA build of torch" >&2
    exit 2
fi
exec "$python" -m ropebench bench all --out "$out" "$@"
