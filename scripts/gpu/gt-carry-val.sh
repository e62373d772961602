#!/usr/bin/env bash
# One H100: greater-than with carry-weighted validation (K of 40) on seeds 0-2, acronyms seeds 1-2.
# Run from the repository root on a GPU machine where `bench` and the embedded model are available (see the README's
# "Every GPU result in one command" section for an offline machine).
: "${OUT:?set OUT to the folder that receives the packed results}"
R=runs; mkdir -p $R
nvidia-smi -L > $R/gpu.txt 2>&1; date +%T > $R/done.txt
pack() { tar czf $OUT/res.tgz --exclude=pruned --exclude='*.safetensors' -C $R . ; }
step() { local name=$1 t0=$(date +%s); shift; "$@" > $R/$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 ))s $(date +%T)" >> $R/done.txt; pack; }
cv() { step gt-w$2-s$1 python3 scripts/gt_carry_val.py $1 $2 $R/gt-w$2-s$1 cuda; }
gt3() { local k=$1; cv 2 $k; cv 1 $k; cv 0 $k
  step probe-w$k python3 scripts/gt_carry_probe.py --n 500 --device cuda --runs $R/gt-w$k-s0 $R/gt-w$k-s1 $R/gt-w$k-s2 --out $R/probe-w$k; }
gt3 7
for s in 1 2; do step acr-s$s python3 -m bench.cli extract --task acronyms --seed $s --device cuda --out $R/acr-s$s; done
step off-w7 python3 -m bench.tools.offtemplate --runs $R/gt-w7-s0 $R/gt-w7-s1 $R/gt-w7-s2 --n 100 --device cuda --out $R/off-w7.md
gt3 5
step off-w5 python3 -m bench.tools.offtemplate --runs $R/gt-w5-s0 $R/gt-w5-s1 $R/gt-w5-s2 --n 100 --device cuda --out $R/off-w5.md
