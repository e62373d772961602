#!/usr/bin/env bash
# Circuit + KD at three learning rates: each circuit under CIRCUITS (default runs/fit-speed, the default extraction
# of every task and seed made by scripts/fit-speed-cpu.sh) fine-tuned with KD for 100 steps × 32 prompts of an
# 800-prompt teacher pool (the CPU preset) at lr 1e-3, 1e-4 and 1e-5; runs that exist are kept, so an interrupted
# build continues. Then results/kd-lr-cpu.md: the held-out KL to the full model before and after, per run and lr.
# Usage: bash scripts/kd-lr-cpu.sh    (IOI and greater-than first: acronyms' 45-token prompts are the slowest)
set -euo pipefail
cd "$(dirname "$0")/.."
circuits=${CIRCUITS:-runs/fit-speed}
runs=runs/kd-lr
for circuit in "$circuits"/extract-ioi-* "$circuits"/extract-greater-than-* "$circuits"/extract-acronyms-*; do
  name=$(basename "$circuit"); task=${name#extract-}; task=${task%-s*}
  for lr in 1e-3 1e-4 1e-5; do
    out="$runs/$name-lr$lr"
    [ -f "$out/metrics.json" ] || bench distill --task "$task" --match "$circuit" --init circuit --steps 100 \
      --batch-size 32 --teacher-pool 800 --lr "$lr" --val-every 50 --out "$out" --overwrite
  done
done
python3 -m bench.tools.kd_check --runs "$runs"/* --out results/kd-lr-cpu.md
