#!/usr/bin/env bash
# Builds every run behind results/compare-smollm2-135m/ on CPU and writes the report. Runs that already
# exist are kept, so an interrupted build continues. Each finished extraction is also kept, without its weights,
# in results/runs-smollm2-cpu/ (commit it): a build on a fresh checkout rebuilds those runs from their records
# (python -m bench.tools.record restore, checked against the weights' hash) instead of extracting again, so the 9-14 h of
# extractions can span machines. Distilled students have no records; they train in the build that reports.
# Usage: bash scripts/make-smollm2-cpu.sh [BUDGET] [SEEDS] [BATCH]
#   BUDGET  the students' budget: matched (default) trains each student until it has spent its circuit's build
#           MACs (bench distill --budget matched: the search, the means and the fit, counted from the shapes that
#           ran), so circuit and student stand at equal compute; a number gives every student that many steps
#           (the paper's 20000, teacher in every step, is the GPU preset: ... 20000 "0 1 2" 64 on a GPU).
#           Students train on a teacher pool of POOL prompts (default 2000; 0: the teacher in every step), which
#           on CPU is 2.07x faster at equal held-out KL (results/distill-teacher-cpu.md). Circuit + KD takes
#           KD_LR (default 1e-4, the rate scripts/kd-lr-cpu.sh measures against 1e-3 and 1e-5). Every report row
#           says the steps × prompts, MACs, seconds and share of 20000. The committed report was made with
#           POOL=800 KD_LR=1e-3 bash scripts/make-smollm2-cpu.sh 100 (100 steps × 32 prompts per student).
#   SEEDS   default "0 1 2". A seed draws the patching, validation, test and held-out-template prompts of its
#           extraction runs and initialises its students; the report gives mean ± std over seeds.
# EXTRACT_ONLY=1 stops after the extractions (and their records): a machine that cannot finish the build can
# still leave its extractions for the next one.
# BUILD_ONLY=1 stops before the report, so the report can be made later on an idle machine (its latencies
# are only as good as the machine is quiet).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-matched}
seeds=${2:-0 1 2}
batch=${3:-32}
pool=${POOL:-2000}
kd_lr=${KD_LR:-1e-4}
if [ "$budget" = matched ]; then spend=(--budget matched); else spend=(--steps "$budget"); fi
runs=runs/smollm2-cpu
records=results/runs-smollm2-cpu  # every finished extraction, without its weights (python -m bench.tools.record)
mkdir -p "$runs" "$records"
have() { [ -f "$1/metrics.json" ]; }
for rec in "$records"/*/; do  # runs of earlier builds, rebuilt from their records and checked bit for bit
  rec=${rec%/}; [ -d "$rec" ] || continue
  run="$runs/$(basename "$rec")"
  [ "$budget" != matched ] || grep -q '"build"' "$rec/metrics.json" || { echo "error: $rec was extracted" \
    "before build MACs were counted, so no student can match it; git rm -r it to extract it again" >&2; exit 2; }
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
    kd=("${spend[@]}" --batch-size "$batch" --val-every 100 --ckpt-every 500 --seed "$seed" --teacher-pool "$pool")
    have "$runs/distill-$task-s$seed" || bench distill --task "$task" --match "$ex" "${kd[@]}" \
        --out "$runs/distill-$task-s$seed" --overwrite
    have "$runs/circuit-kd-$task-s$seed" || bench distill --task "$task" --match "$ex" --init circuit "${kd[@]}" \
        --lr "$kd_lr" --out "$runs/circuit-kd-$task-s$seed" --overwrite
  done
done
[ -n "${BUILD_ONLY:-}" ] && exit 0
bench compare --task all --runs "$runs" --report md --out results/compare-smollm2-135m --overwrite
