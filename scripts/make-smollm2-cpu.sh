#!/usr/bin/env bash
# Builds every run behind results/compare-smollm2-135m/ on CPU and writes the report. Runs that already
# exist are kept, so an interrupted build continues. Each finished extraction is also kept, without its weights,
# in results/runs-smollm2-cpu/ (commit it): a build on a fresh checkout rebuilds those runs from their records
# (python -m bench.tools.record restore, checked against the weights' hash) instead of extracting again, so the 9-14 h of
# extractions can span machines. Distilled students have no records; they train in the build that reports.
# Usage: bash scripts/make-smollm2-cpu.sh [STEPS] [SEEDS] [BATCH]
#   STEPS   distillation budget, the CPU preset: 100 steps of BATCH (default 32) prompts, which took 425 s
#           (circuit + KD) and 539 s (random init) for the size-matched IOI students of seed 0 on 2 CPU cores with
#           the teacher in every step (results/kd-stream-ioi-smollm2-135m); acronyms' prompts are 3x longer.
#           Below 20000 steps the students train on a teacher pool of a quarter of the prompts they see (four
#           passes, teacher logits computed once): 2.07x faster at equal held-out KL (0.99x) on CPU
#           (results/distill-teacher-cpu.md). The paper's 20000 steps are the GPU preset, teacher in every step:
#           bash scripts/make-smollm2-cpu.sh 20000 "0 1 2" 64 on a GPU.
#           Every report row says how many steps of how many prompts ran.
#   SEEDS   default "0 1 2". A seed draws the patching, validation, test and held-out-template prompts of its
#           extraction runs and initialises its students; the report gives mean ± std over seeds.
# EXTRACT_ONLY=1 stops after the extractions (and their records): a machine that cannot finish the build can
# still leave its extractions for the next one.
# BUILD_ONLY=1 stops before the report, so the report can be made later on an idle machine (its latencies
# are only as good as the machine is quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-100}
seeds=${2:-0 1 2}
batch=${3:-32}
pool=$(( steps < 20000 ? steps * batch / 4 : 0 ))
runs=runs/smollm2-cpu
records=results/runs-smollm2-cpu  # every finished extraction, without its weights (python -m bench.tools.record)
mkdir -p "$runs" "$records"
have() { [ -f "$1/metrics.json" ]; }
for rec in "$records"/*/; do  # runs of earlier builds, rebuilt from their records and checked bit for bit
  rec=${rec%/}; [ -d "$rec" ] || continue
  run="$runs/$(basename "$rec")"
  have "$run" || { rm -rf "$run"; python3 -m bench.tools.record restore "$rec" "$run"; }
done
extract() {  # extract RUN ARGS...: the run, then its record
  local run=$1; shift
  have "$run" || bench extract "$@" --out "$run" --overwrite
  [ -d "$records/$(basename "$run")" ] || python3 -m bench.tools.record save "$run" "$records/$(basename "$run")"
}
for seed in $seeds; do  # the extractions first: they are most of the time, and their records outlive the machine
  for task in ioi greater-than acronyms; do
    extract "$runs/extract-$task-s$seed" --task "$task" --seed "$seed"
    extract "$runs/extract-heads-$task-s$seed" --task "$task" --seed "$seed" --no-include-mlps
  done
done
[ -n "${EXTRACT_ONLY:-}" ] && exit 0
for seed in $seeds; do
  for task in ioi greater-than acronyms; do
    ex="$runs/extract-$task-s$seed"
    kd=(--steps "$steps" --batch-size "$batch" --val-every 25 --ckpt-every 50 --seed "$seed" --teacher-pool "$pool")
    have "$runs/distill-$task-s$seed" || bench distill --task "$task" --match "$ex" "${kd[@]}" \
        --out "$runs/distill-$task-s$seed" --overwrite
    have "$runs/circuit-kd-$task-s$seed" || bench distill --task "$task" --match "$ex" --init circuit "${kd[@]}" \
        --out "$runs/circuit-kd-$task-s$seed" --overwrite
  done
done
[ -n "${BUILD_ONLY:-}" ] && exit 0
bench compare --task all --runs "$runs" --report md --out results/compare-smollm2-135m --overwrite
