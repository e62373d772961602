#!/usr/bin/env bash
# GPU probe of fit settings. Run from the repository root.
# Runs on a GPU machine where `bench` and the embedded model are available (see the README's
# "Every GPU result in one command" section for an offline machine).
# The circuits' run directories (ioi-a0.1, ioi-a0.14, ioi-a0.2, gt-a0.1) are expected under runs/circuits.
: "${OUT:?set OUT to the folder that receives the results}"
P=$OUT/p; mkdir -p $P; C=runs/circuits
nvidia-smi -L > $P/gpu.txt 2>&1
probe() { local name=$1 t=$2; shift 2
  timeout $t python3 -m bench.tools.fit_probe --device cuda --out $P/$name.md "$@" > $P/$name.log 2>&1; echo "$name rc=$? $(date +%T)" >> $P/done.txt; }
date +%T > $P/done.txt
probe ioi-a0.1 210 --runs $C/ioi-a0.1 --variants steps=100 steps=30 steps=100,jitter=1 steps=100,jitter=2 \
  steps=100,jitter=3 steps=200,jitter=2 steps=300,jitter=3 steps=100,jitter=2,lr=0.001
probe gt-a0.1 100 --runs $C/gt-a0.1 --variants steps=100 steps=100,jitter=2 steps=300,jitter=3
probe ioi-big 130 --runs $C/ioi-a0.14 $C/ioi-a0.2 --variants steps=100 steps=100,jitter=2 steps=300,jitter=3
tar czf $OUT/probe.tgz -C $OUT p
