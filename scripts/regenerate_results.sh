#!/usr/bin/env bash
# Every committed result under results/, regenerated from scratch: the exact commands, in the order they ran.
#   bash scripts/regenerate_results.sh OUT_DIR
# On 2 CPU cores this takes about 2 hours (jobs run two at a time, one thread each). Then
# scripts/record_result.py copies each sweep's small files into results/ (see each results README's provenance),
# and `python scripts/check_results.py` recomputes every README claim from the copies.
set -u
OUT=${1:?usage: regenerate_results.sh OUT_DIR}
mkdir -p "$OUT"
J="launcher=joblib hydra.launcher.n_jobs=2 train.threads=1"
ropebench sweep compare seed=0,1,2 $J hydra.sweep.dir="$OUT/compare"
# results/compare keeps the RoPE runs as the sweep left them; the scaling rows below go to results/rope_scaling.
cp -r "$OUT/compare" "$OUT/compare_snapshot"
for seed in 0 1 2; do
  for scaling in linear ntk dynamic yarn; do
    ropebench eval-length "$OUT/compare/pe=rope,seed=$seed" --rope-scaling $scaling
  done
done
ropebench sweep compare pe=rope pe.rotate_values=true seed=0,1,2 $J hydra.sweep.dir="$OUT/rotate_values"
# The lr=2e-3 runs are the compare sweep's seed-0 runs (identical configs).
ropebench sweep lr train.lr=0.001,0.004 $J hydra.sweep.dir="$OUT/lr"
ropebench sweep passkey seed=0,1,2 $J hydra.sweep.dir="$OUT/passkey"
for seed in 0 1 2; do
  for scaling in yarn dynamic; do
    ropebench passkey "$OUT/passkey/pe=rope,seed=$seed" --rope-scaling $scaling
  done
done
# Fine-tuned context extension: seed 0 with the main job's defaults (timed as a new user would run it), then
# seeds 1 and 2 two at a time; the base runs are built into $OUT/extend/base by the sweep itself.
ropebench sweep extend "seed=choice(0)" hydra.sweep.dir="$OUT/extend"
ropebench sweep extend seed=1,2 $J hydra.sweep.dir="$OUT/extend"
# The Hugging Face bridge: the seed-0 RoPE base run exported to transformers and evaluated through the HF path
# (on its own text and settings, from the export's manifest) beside its native evaluation.
ropebench export-hf "$OUT/extend/base/pe=rope,seed=0" "$OUT/hf/export"
ropebench eval-length "$OUT/hf/export" --out "$OUT/hf/hf_eval"
ropebench eval-length "$OUT/hf/export" --out "$OUT/hf/hf_eval" --rope-scaling yarn
ropebench eval-length "$OUT/extend/base/pe=rope,seed=0" --rope-scaling yarn
