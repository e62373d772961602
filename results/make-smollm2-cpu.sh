#!/usr/bin/env bash
# Builds every run behind results/compare-smollm2-135m/ on CPU and writes the report. Runs that already
# exist are kept, so an interrupted build continues. Usage: bash results/make-smollm2-cpu.sh [EPOCHS]
# EPOCHS is the distillation budget (default 30: on 2 CPU cores one Adam step of a size-matched student
# takes seconds, so the paper's 20000 epochs are a GPU job; every report row says how many epochs ran).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-30}
runs=runs/smollm2-cpu
mkdir -p "$runs"
have() { [ -f "$1/metrics.json" ]; }
for task in ioi acronyms greater-than; do
  ex="$runs/extract-$task"; heads="$runs/extract-heads-$task"
  have "$ex" || bench extract --task "$task" --out "$ex" --overwrite
  have "$heads" || bench extract --task "$task" --no-include-mlps --out "$heads" --overwrite
  have "$runs/distill-$task" || bench distill --task "$task" --match "$ex" --epochs "$epochs" \
      --out "$runs/distill-$task" --overwrite
  have "$runs/circuit-kd-$task" || bench distill --task "$task" --match "$ex" --init circuit --epochs "$epochs" \
      --out "$runs/circuit-kd-$task" --overwrite
done
bench compare --task all --runs "$runs" --report md --out results/compare-smollm2-135m --overwrite
