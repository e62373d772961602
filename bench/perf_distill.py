"""Benchmark: distillation steps/s with cached teacher logits against a teacher forward in every step.

Both run in one process, on the same student, prompts and optimizer settings, one after the other, after
warm-up; the step is what `bench distill` does (student forward at the last position, L_distill, backward,
Adam):

    python -m bench.perf_distill --model smollm2-135m --task ioi --steps 20 --out results/distill-steps-cpu.md
"""
from __future__ import annotations

import copy
import sys
import time
from argparse import ArgumentError
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from jsonargparse import ArgumentParser

from bench.cli import normalise
from bench.distillation import init_student, l_distill, student_config, teacher_config, teacher_logits
from models import arch, loading
from models.pruned import count_params, count_params_of
from models.types import BenchError
from tasks import get_task
from tasks.data import TaskDataModule


@dataclass
class PerfDistillArgs:
    """Time distillation steps with cached teacher logits against the teacher in the loop.

    Args:
        model: the teacher (smollm2-135m, a hub id or a local HF directory).
        task: the task whose training (patching) prompts form the full batch.
        steps: timed steps per mode (after warm-up).
        warmup: untimed steps per mode first.
        layers: student layers (default: a quarter of the teacher's, at least 1).
        heads: student heads (default: the teacher's).
        d_mlp: student MLP width (default: the teacher's).
        n_prompts: prompts in the full batch (bench distill's default --n-patching is 40).
        seed: seeds the prompts and the student.
        device: cpu, cuda, cuda:N or auto.
        out: write the markdown report here too (default: results/distill-steps-DEVICE.md).
    """

    model: str = loading.DEFAULT_MODEL
    task: str = "ioi"
    steps: int = 10
    warmup: int = 2
    layers: int | None = None
    heads: int | None = None
    d_mlp: int | None = None
    n_prompts: int = 40
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def __post_init__(self) -> None:
        get_task(self.task)
        for name in ("steps", "n_prompts"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1")
        if self.warmup < 0:
            raise BenchError("--warmup must be >= 0")


def timed(step: Callable[[], None], n: int, warmup: int, device: torch.device) -> float:
    """Seconds per step: median of n timed steps after `warmup` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(n):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def make_step(student, ids: torch.Tensor, targets: torch.Tensor, teacher_fn: Callable[[], torch.Tensor]):
    """One distillation step (Adam, lr 1e-3) where the teacher logits come from `teacher_fn`."""
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-3)

    def step() -> None:
        loss = l_distill(student(ids, last_only=True), teacher_fn(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def measure(args: PerfDistillArgs) -> dict:
    device = loading.resolve_device(args.device)
    teacher, tok = loading.load_model(args.model, device=device)
    s = arch.check_supported(teacher)
    dm = TaskDataModule(args.task, tok, args.n_prompts, 1, 1, args.seed)
    ids, targets = dm.patching.input_ids.to(device), dm.patching.targets.to(device)  # (N, T), (N,)
    shape = (args.layers or max(1, s.n_layers // 4), args.heads or s.n_heads, args.d_mlp or s.d_mlp)
    student = init_student(student_config(teacher_config(teacher), s.group, *shape), teacher, args.seed).to(device)
    cached = teacher_logits(teacher, dm)["patching"].to(device)  # (N, V), once

    @torch.inference_mode()
    def in_loop() -> torch.Tensor:
        return teacher(ids, logits_to_keep=1).logits[:, -1].float()

    modes = {"cached teacher logits": lambda: cached, "teacher forward every step": in_loop}
    sec = {name: timed(make_step(copy.deepcopy(student), ids, targets, fn), args.steps, args.warmup, device)
           for name, fn in modes.items()}
    return {"sec": sec, "shape": shape, "ids": tuple(ids.shape), "device": device,
            "student_params": count_params(student)["non_embedding"],
            "teacher_params": count_params_of(teacher_config(teacher))["non_embedding"]}


def report(r: dict, args: PerfDistillArgs, argv: list[str]) -> str:
    (cached_name, cached), (loop_name, loop) = r["sec"].items()
    device = r["device"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    layers, heads, d_mlp = r["shape"]
    lines = [f"# Distillation steps: cached teacher logits vs teacher in the loop — {args.model}, {args.task}", "",
             f"Command: `python -m bench.perf_distill {' '.join(argv)}`", "",
             f"Device: {name}; torch {torch.__version__}; fp32. Full batch of {r['ids'][0]} prompts × {r['ids'][1]} "
             f"tokens. Student: {layers} layers, {heads} heads, d_mlp {d_mlp} ({r['student_params']:,} non-embedding "
             f"params; teacher {r['teacher_params']:,}). Median of {args.steps} steps per mode after {args.warmup} "
             "warm-up steps, both in this one process on copies of the same student.", "",
             "| step | ms/step | steps/s |", "| --- | ---: | ---: |",
             f"| {cached_name} | {cached * 1e3:.1f} | {1 / cached:.2f} |",
             f"| {loop_name} | {loop * 1e3:.1f} | {1 / loop:.2f} |", "",
             f"Cached logits are **{loop / cached:.1f}×** the steps/s of a teacher forward every step."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = ArgumentParser(prog="python -m bench.perf_distill", description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_class_arguments(PerfDistillArgs)
    try:
        cfg = p.parse_args(normalise(argv))
        args = PerfDistillArgs(**{k: v for k, v in vars(cfg).items() if k != "__path__"})
        r = measure(args)
    except (BenchError, ArgumentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(r, args, argv)
    print(text)
    out = Path(args.out or f"results/distill-steps-{r['device'].type}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
