"""Benchmark: the reference Algorithm 1 loop against the fast engine, and full against pruned latency.

Both engines run in one process, on the same model, prompts and means, one after the other:

    python -m bench.tools.perf --tasks ioi acronyms greater-than --out results/perf-cpu.md
"""
from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
from dataclasses import dataclass

import torch

from bench.core.latency import measure
from models import arch, loading
from models.ablation import collect_means
from models.fast import FastScorer
from models.macs import search_macs
from models.pruned import count_params
from models.search import HookScorer, Search
from models.surgery import prune
from models.types import BenchError, candidate_order
from tasks import get_task
from tasks.data import TaskDataModule


@dataclass
class EngineRun:
    wall_s: float
    forwards: int
    removed: frozenset
    peak_mem_mb: float
    states: list  # the removed sets the scorer was asked about


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def run_engine(scorer_cls, model, ids, means, order, alpha, device, speculate: int = 1) -> EngineRun:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    scorer = scorer_cls(model, ids, means)
    search = Search(scorer, order, alpha, speculate)
    removed = search.run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EngineRun(time.perf_counter() - start, scorer.forwards, removed, peak_mem_mb(device), search.scored_states())


def bench_task(task_name: str, model, tok, args, device) -> dict:
    dm = TaskDataModule(task_name, tok, args.n_patching, args.n_val, args.n_test, args.seed)
    dm.setup()
    means = collect_means(model, dm.patching.input_ids.to(device), "mean")
    shape = model.config
    order = candidate_order(shape.num_hidden_layers, shape.num_attention_heads, True)
    val = dm.val.input_ids.to(device)
    alpha = get_task(task_name).alpha if args.alpha is None else args.alpha
    fast = run_engine(FastScorer, model, val, means, order, alpha, device)
    ref = run_engine(HookScorer, model, val, means, order, alpha, device)
    other = {dt: run_engine(FastScorer, copy.deepcopy(model).to(loading.resolve_dtype(dt)), val, means, order,
                            alpha, device) for dt in args.fast_dtypes}
    wide = {w: run_engine(FastScorer, model, val, means, order, alpha, device, w) for w in args.speculate}
    full_m, pruned_m = prune(model, (), means), prune(model, fast.removed, means)
    test = dm.test.input_ids
    lat = {f"{name}_b{b}": measure(m, test[:b], runs=args.runs).to_dict()
           for b in (len(test), 1) for name, m in (("full", full_m), ("pruned", pruned_m))}
    macs = search_macs(arch.check_supported(model), val.shape[0], val.shape[1], fast.states)
    return {"task": task_name, "reference": ref, "fast": fast, "identical": ref.removed == fast.removed, "other": other,
            "speculative": wide,
            "mac_ratio": macs[0] / macs[1],
            "params": (count_params(full_m)["non_embedding"], count_params(pruned_m)["non_embedding"]),
            "latency": lat}


def report(rows: list[dict], args, device) -> str:
    alpha = "each task's own" if args.alpha is None else args.alpha
    lines = [f"# Extraction engines and pruned latency — {args.model}", "",
             f"Command: `python -m bench.tools.perf {' '.join(sys.argv[1:])}`", "",
             f"Device: {rows[0]['latency']['full_b1']['device']}; torch {torch.__version__}; fp32; "
             f"alpha={alpha}, mean ablation, MLPs included; n_val={args.n_val}, n_patching={args.n_patching}, "
             f"seed={args.seed}. Both engines ran in this one process on the same prompts and means.", "",
             "## Algorithm 1: reference loop (one hooked full forward per candidate) vs fast engine", "",
             "| task | reference s | fast s | speed-up | MAC ratio | ref forwards/s | fast forwards/s | "
             "peak MB after fast / after ref | same circuit |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ref, fast = r["reference"], r["fast"]
        lines.append(f"| {r['task']} | {ref.wall_s:.1f} | {fast.wall_s:.1f} | {ref.wall_s / fast.wall_s:.1f}× | "
                     f"{r['mac_ratio']:.1f}× | "
                     f"{ref.forwards / ref.wall_s:.2f} | {fast.forwards / fast.wall_s:.2f} | "
                     f"{fast.peak_mem_mb:.0f} / {ref.peak_mem_mb:.0f} | {'yes' if r['identical'] else 'NO'} |")
    lines += ["", "MAC ratio: the weight multiply-accumulates of the reference loop over the fast engine's, counted "
              "analytically for the states this search scored (`models/macs.py`). Where matmuls dominate, as on "
              "CPU, it is the speed-up any exact engine of this design can reach."]
    lines += variant_table(rows, "other") + variant_table(rows, "speculative")
    lines += ["", "## Pruned vs full model latency (last-position logits, median of "
              f"{args.runs} runs after warm-up)", "",
              "| task | params cut | batch | seq | full ms (p95) | pruned ms (p95) | latency cut |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        full_p, pruned_p = r["params"]
        for b in sorted({k.split("_b")[1] for k in r["latency"]}, key=int, reverse=True):
            f, p = r["latency"][f"full_b{b}"], r["latency"][f"pruned_b{b}"]
            lines.append(f"| {r['task']} | {1 - pruned_p / full_p:.1%} | {b} | {f['seq_len']} | "
                         f"{f['median_ms']:.2f} ({f['p95_ms']:.2f}) | {p['median_ms']:.2f} ({p['p95_ms']:.2f}) | "
                         f"{1 - p['median_ms'] / f['median_ms']:.1%} |")
    return "\n".join(lines) + "\n"


VARIANT_TABLES = {  # r[key] -> (title, the setting's column)
    "other": ("Fast engine at a lower precision (option) vs the fp32 reference loop", "dtype"),
    "speculative": ("Fast engine with speculation (up to w candidates of a layer scored as one batch)", "w"),
}


def variant_table(rows: list[dict], key: str) -> list[str]:
    """The fast engine in other settings (--fast-dtypes, --speculate) against the fp32 reference and fast runs."""
    if not rows[0][key]:
        return []
    title, setting = VARIANT_TABLES[key]
    lines = ["", f"## {title}", "",
             f"| task | {setting} | s | speed-up vs reference | speed-up vs fast | states scored (fast) "
             "| same circuit |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        for value, run in r[key].items():
            lines.append(f"| {r['task']} | {value} | {run.wall_s:.1f} | {r['reference'].wall_s / run.wall_s:.1f}× | "
                         f"{r['fast'].wall_s / run.wall_s:.2f}× | {run.forwards} ({r['fast'].forwards}) | "
                         f"{'yes' if run.removed == r['reference'].removed else 'NO'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools.perf", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=loading.DEFAULT_MODEL)
    p.add_argument("--tasks", nargs="+", default=["ioi", "acronyms", "greater-than"])
    p.add_argument("--alpha", type=float, default=None, help="default: each task's own (`Task.alpha`)")
    p.add_argument("--n-patching", type=int, default=40)
    p.add_argument("--n-val", type=int, default=40)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--fast-dtypes", nargs="*", default=[], metavar="DTYPE",
                   help="also run the fast engine on a copy of the model in these dtypes (e.g. bfloat16) and "
                        "report whether the circuit changed")
    p.add_argument("--speculate", nargs="*", type=int, default=[], metavar="W",
                   help="also run the fast engine scoring up to W candidates of a layer as one batch, for each W")
    p.add_argument("--out", default=None, help="write the markdown report here too")
    args = p.parse_args(argv)
    try:  # fail on a typo before the first long run
        for name in args.tasks:
            get_task(name)
        for dt in args.fast_dtypes:
            loading.resolve_dtype(dt)
        if any(w < 1 for w in args.speculate):
            raise BenchError("--speculate widths must be >= 1")
        device = loading.resolve_device(args.device)
        model, tok = loading.load_model(args.model, device=device)
    except BenchError as e:
        p.exit(2, f"error: {e}\n")
    rows = []
    for name in args.tasks:
        rows.append(bench_task(name, model, tok, args, device))
        text = report(rows, args, device)  # rewritten after every task, so an interrupted run keeps what it measured
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
