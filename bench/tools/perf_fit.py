"""Benchmark: where a fit of the constants spends its time, part by part, and what a whole extraction spent.

For each `bench extract` run directory, its circuit is refitted here from its own prompts and patching means, and a
few steps are timed part by part, after a warm-up step: drawing and jittering a batch, the teacher's forward (with
its greedy answer tokens), the pruned model's forward, its backward and the optimizer: on fresh prompts (the
teacher in every step), on a pool (the teacher's answers computed once: its build is timed per batch), and on the
pool with the prompts' common prefix run once per batch. The
second table reads each run's own `metrics.json`: search and fit seconds and their ratio.

    python -m bench.tools.perf_fit --runs runs/fit-speed/* --time runs/fit-speed/extract-ioi-s0 \\
        --out results/perf-fit-cpu.md
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from bench.core.pipeline import prepare_run
from bench.core.distillation import teacher_answer
from bench.core.fitting import AnswerPool, ConstantsFit, fit_data, pruned_teacher_answer
from bench.core.latency import device_name
from bench.core.match import read_run
from bench.core.rundir import RunDir
from models.ablation import no_means
from models.surgery import prune
from models.types import BenchError

PARTS = ("batch", "teacher", "forward", "backward", "optimizer")


class Clock:
    """Seconds per named part, summed; on CUDA each part ends with a synchronize."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.s = device, dict.fromkeys(PARTS, 0.0)

    @contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.s[name] += time.perf_counter() - start


def time_steps(module: ConstantsFit, data, steps: int, device: torch.device) -> dict[str, float]:
    """Seconds per step of each part over `steps` steps of `data`, after one untimed step."""
    opt, batches = module.configure_optimizers(), iter(data)
    clock = Clock(device)
    for j in range(steps + 1):
        if j == 1:
            clock = Clock(device)  # the first step warmed up
        with clock.part("batch"):
            batch = {k: v.to(device) for k, v in next(batches).items()}
        with clock.part("teacher"):
            if "teacher" not in batch:
                batch["input_ids"], batch["teacher"] = teacher_answer(module.model, batch["input_ids"], module.n_new)
        with clock.part("forward"):
            loss = module.kl(batch)
        with clock.part("backward"):
            opt.zero_grad()
            loss.backward()
        with clock.part("optimizer"):
            opt.step()
    return {k: v / steps for k, v in clock.s.items()}


def time_run(run: Path, steps: int, pool: int, device: str) -> dict:
    """Per-step part times on fresh prompts and on a pool, and the pool's build time per batch."""
    saved = read_run(run)
    args, p = prepare_run(saved, device)
    for q in p.model.parameters():
        q.requires_grad_(False)
    module = ConstantsFit(p.model, frozenset(saved.circuit.removed()), p.means, args.fit_lr, p.task.n_new(p.tokenizer))
    fresh, _, _ = fit_data(module, p.task, p.tokenizer, p.dm, replace(args.fit, pool=0, check_every=0), args.seed)
    start = time.perf_counter()
    full = prune(p.model, (), no_means())
    built = AnswerPool.build(fresh, pool, lambda ids: pruned_teacher_answer(full, ids.to(p.device), module.n_new),
                             args.seed, args.fit_batch_size)
    build_s = (time.perf_counter() - start) / pool
    times = {}
    for kind, data, share in (("fresh prompts", fresh, False), ("pool", built, False), ("pool, shared prefix",
                                                                                         built, True)):
        module.share_prefix = share
        times[kind] = time_steps(module, data, steps, p.device)
    return {"run": run.name, "task": args.task, "n_new": module.n_new, "device": device_name(p.device),
            "times": times, "pool_batch_s": build_s}


def report(timed: list[dict], runs: list[Path], argv: list[str]) -> str:
    lines = ["# Where a fit of the constants spends its time", "",
             f"Command: `python -m bench.tools.perf_fit {' '.join(argv)}`", ""]
    if timed:
        lines += [f"Device: {timed[0]['device']}; fp32.", "", "## One step, part by part (seconds per step)", "",
                  f"| run | answer tokens | data | {' | '.join(PARTS)} | step |",
                  "| --- | ---: | --- |" + " ---: |" * (len(PARTS) + 1)]
        for r in timed:
            for kind, t in r["times"].items():
                lines.append(f"| {r['run']} | {r['n_new']} | {kind} | {' | '.join(f'{t[k]:.3f}' for k in PARTS)} | "
                             f"{sum(t.values()):.3f} |")
        lines += ["", "A pool's teacher answers are computed once, in its build: "
                  + "; ".join(f"{r['run']} {r['pool_batch_s']:.3f} s a batch" for r in timed) + ".", ""]
    lines += ["## Search and fit of each run (its own `metrics.json`)", "",
              "| run | search s | fit s | fit steps | (search + fit) / search | ran on |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for run in runs:
        m, cfg = RunDir(run).metrics(), RunDir(run).config()
        search, fit = m["search"], m["fit"]
        lines.append(f"| {run.name} | {search['wall_s']:.0f} | {fit['wall_s']:.0f} | {fit['steps']} | "
                     f"{(search['wall_s'] + fit['wall_s']) / search['wall_s']:.2f}× | "
                     f"{cfg.get('versions', {}).get('cpu', search['device'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.tools.perf_fit", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="`bench extract` run directories: their search and fit")
    p.add_argument("--time", nargs="*", default=[], metavar="RUN", help="runs whose fit is timed part by part")
    p.add_argument("--steps", type=int, default=5, help="timed steps per kind of data, after one warm-up step")
    p.add_argument("--pool", type=int, default=4, help="batches of the pool that is built and timed")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the markdown report here too")
    args = p.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    try:
        if args.steps < 1 or args.pool < 1:
            raise BenchError("--steps and --pool must be >= 1")
        for run in runs:
            if not RunDir(run).finished:
                raise BenchError(f"{run} has no metrics.json; give finished `bench extract` run directories")
        timed = [time_run(Path(run), args.steps, args.pool, args.device) for run in args.time]
    except BenchError as e:
        p.exit(2, f"error: {e}\n")
    text = report(timed, runs, argv)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
