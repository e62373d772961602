#!/usr/bin/env bash
# Builds every run behind results/compare-smollm2-135m/ on CPU and writes the report. Runs that already
# exist are kept, so an interrupted build continues.
# Usage: bash results/make-smollm2-cpu.sh [EPOCHS] [SEEDS]
#   EPOCHS  distillation budget (default 30: on 2 CPU cores one Adam step of a size-matched student takes
#           seconds, so the paper's 20000 epochs are a GPU job; every report row says how many epochs ran).
#   SEEDS   default "0 1 2". A seed draws the patching, validation, test and held-out-template prompts of its
#           extraction runs and initialises its students; the report gives mean ± std over seeds.
# BUILD_ONLY=1 stops before the report, so the report can be made later on an idle machine (its latencies
# are only as good as the machine is quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-30}
seeds=${2:-0 1 2}
runs=runs/smollm2-cpu
mkdir -p "$runs"
have() { [ -f "$1/metrics.json" ]; }
for seed in $seeds; do
  for task in ioi acronyms greater-than; do
    ex="$runs/extract-$task-s$seed"; heads="$runs/extract-heads-$task-s$seed"
    have "$ex" || bench extract --task "$task" --seed "$seed" --out "$ex" --overwrite
    have "$heads" || bench extract --task "$task" --seed "$seed" --no-include-mlps --out "$heads" --overwrite
    have "$runs/distill-$task-s$seed" || bench distill --task "$task" --match "$ex" --epochs "$epochs" \
        --seed "$seed" --out "$runs/distill-$task-s$seed" --overwrite
    have "$runs/circuit-kd-$task-s$seed" || bench distill --task "$task" --match "$ex" --init circuit \
        --epochs "$epochs" --seed "$seed" --out "$runs/circuit-kd-$task-s$seed" --overwrite
  done
done
[ -n "${BUILD_ONLY:-}" ] && exit 0
bench compare --task all --runs "$runs" --report md --out results/compare-smollm2-135m --overwrite
