#!/usr/bin/env bash
# The fit of the constants, timed and checked: the default `bench extract` of every task for each seed (runs that
# already exist are kept, so an interrupted build continues), then
#   results/perf-fit-cpu.md   each run's search and fit seconds, and seed 0's fit timed part by part;
#   results/fit-check-cpu.md  each run's fitted constants against those of the CPU report's run of the same circuit
#                             (results/runs-smollm2-cpu/), on test, held-out and off-template prompts.
# Usage: bash scripts/fit-speed-cpu.sh [SEEDS]    (default "0 1 2"; about an hour on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-0 1 2}
runs=runs/fit-speed
for seed in $seeds; do
  for task in ioi greater-than acronyms; do
    run="$runs/extract-$task-s$seed"
    [ -f "$run/metrics.json" ] || bench extract --task "$task" --seed "$seed" --out "$run" --overwrite
  done
done
python3 -m bench.tools.perf_fit --runs "$runs"/extract-* --time "$runs"/extract-*-s0 --out results/perf-fit-cpu.md
python3 -m bench.tools.fit_check --old results/runs-smollm2-cpu --new "$runs" --out results/fit-check-cpu.md
