"""Benchmark: distillation steps/s on the task stream, and where a step's time goes.

The step is what `bench distill` does: draw a fresh batch, the teacher's answer-position logits under no_grad, the
student's, L_distill, backward, Adam. It runs twice in one process, on copies of the same student and the same
batches, after warm-up: written out by hand with each part timed, and under `bench distill`'s Lightning loop. The
ratio is the loop's overhead; the parts say how much of a step is forward and backward:

    python -m bench.tools.perf_distill --model smollm2-135m --task ioi --steps 20 --out results/distill-steps-cpu.md
"""
from __future__ import annotations

import copy
import sys
import time
import warnings
from argparse import ArgumentError
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from bench.cli import expected_warnings, normalise, quiet_libraries
from bench.core.distill_data import TaskStream
from bench.core.distillation import DistillationModule, init_student, l_distill, student_config, teacher_config
from bench.core.latency import device_name
from models import arch, loading
from models.pruned import count_params, count_params_of
from models.types import BenchError
from tasks import get_task


@dataclass
class PerfDistillArgs:
    """Time distillation steps on the task stream: each part of a hand-written step, and the Lightning loop.

    Args:
        model: the teacher (smollm2-135m, a hub id or a local HF directory).
        task: the task whose stream feeds the steps.
        steps: timed steps per mode (after warm-up).
        warmup: untimed steps per mode first.
        layers: student layers (default: a quarter of the teacher's, at least 1).
        heads: student heads (default: the teacher's).
        d_mlp: student MLP width (default: the teacher's).
        batch_size: prompts per step (bench distill's default is 64).
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
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def __post_init__(self) -> None:
        get_task(self.task)
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1")
        if self.warmup < 0:
            raise BenchError("--warmup must be >= 0")


PARTS = ("draw the batch", "teacher forward", "student forward + loss", "backward", "Adam step")


class Timer:
    """Wall seconds per named part; on CUDA each part ends with a synchronize so the times are the part's own."""

    def __init__(self, device: torch.device):
        self.device, self.total = device, dict.fromkeys(PARTS, 0.0)

    def __call__(self, part: str, fn: Callable):
        start = time.perf_counter()
        out = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.total[part] += time.perf_counter() - start
        return out


def bare_loop(module: DistillationModule, stream: TaskStream, args: PerfDistillArgs, device) -> dict[str, float]:
    """`bench distill`'s step written out by hand, each part timed: seconds per step for each part."""
    opt = module.configure_optimizers()
    timer = Timer(device)
    for k in range(args.warmup + args.steps):
        if k == args.warmup:
            timer.total = dict.fromkeys(PARTS, 0.0)
        batch = timer("draw the batch", lambda: {n: t.to(device) for n, t in stream.batch(k).items()})
        ids = batch["input_ids"]
        teacher = timer("teacher forward", lambda: module.teacher_logits(ids))
        loss = timer("student forward + loss", lambda: l_distill(module(ids), teacher, batch["targets"]))
        timer("backward", loss.backward)
        timer("Adam step", lambda: (opt.step(), opt.zero_grad(set_to_none=True)))
    return {part: t / args.steps for part, t in timer.total.items()}


class StepClock(Callback):
    """Wall time of the training steps after the warm-up ones, as the Trainer runs them."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.start, self.end = warmup, device, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.end = time.perf_counter()


def lightning_loop(module: DistillationModule, stream: TaskStream, args: PerfDistillArgs, device) -> float:
    """Seconds per step of `bench distill`'s Trainer loop (no validation or checkpoints in the timed steps)."""
    clock = StepClock(args.warmup, device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    trainer = L.Trainer(max_steps=args.warmup + args.steps, max_epochs=-1, accelerator=accelerator, devices=1,
                        logger=False, callbacks=[clock], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        log_every_n_steps=module.log_every)
    trainer.fit(module, train_dataloaders=DataLoader(stream, batch_size=None))
    return (clock.end - clock.start) / args.steps


def measure(args: PerfDistillArgs) -> dict:
    device = loading.resolve_device(args.device)
    teacher, tok = loading.load_model(args.model, device=device)
    s, task = arch.check_supported(teacher), get_task(args.task)
    stream = TaskStream(task, tok, args.seed, args.batch_size, frozenset())
    shape = (args.layers or max(1, s.n_layers // 4), args.heads or s.n_heads, args.d_mlp or s.d_mlp)
    student = init_student(student_config(teacher_config(teacher), s.group, *shape), teacher, args.seed)

    def module() -> DistillationModule:  # a fresh copy of the same student for each loop
        m = DistillationModule(copy.deepcopy(student), teacher, task, tok, log_every=10).to(device)
        m.on_fit_start()
        return m
    parts = bare_loop(module(), stream, args, device)
    with expected_warnings(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        loop = lightning_loop(module(), stream, args, device)  # training steps only, by design
    return {"parts": parts, "loop": loop, "shape": shape, "t": stream.spaces[0].length, "device": device,
            "student_params": count_params(student)["non_embedding"],
            "teacher_params": count_params_of(teacher_config(teacher))["non_embedding"]}


def report(r: dict, args: PerfDistillArgs, argv: list[str]) -> str:
    parts, loop, device = r["parts"], r["loop"], r["device"]
    bare = sum(parts.values())
    compute = sum(parts[p] for p in ("teacher forward", "student forward + loss", "backward"))
    name = device_name(device)
    layers, heads, d_mlp = r["shape"]
    lines = [f"# Distillation step throughput on the task stream — {args.model}, {args.task}", "",
             f"Command: `python -m bench.tools.perf_distill {' '.join(argv)}`", "",
             f"Device: {name}; torch {torch.__version__}; fp32. Batches of {args.batch_size} fresh prompts × {r['t']} "
             f"tokens from the stream. Student: {layers} layers, {heads} heads, d_mlp {d_mlp} "
             f"({r['student_params']:,} non-embedding params; teacher {r['teacher_params']:,}). Mean of {args.steps} "
             f"steps per loop after {args.warmup} warm-up steps, both loops in this one process on copies of the "
             "same student.", "",
             "| part of the hand-written step | ms/step | share |", "| --- | ---: | ---: |",
             *(f"| {p} | {parts[p] * 1e3:.1f} | {parts[p] / bare:.0%} |" for p in PARTS),
             f"| **whole step** | **{bare * 1e3:.1f}** | 100% |", "",
             "| loop | ms/step | steps/s |", "| --- | ---: | ---: |",
             f"| hand-written | {bare * 1e3:.1f} | {1 / bare:.2f} |",
             f"| `bench distill`'s Lightning loop | {loop * 1e3:.1f} | {1 / loop:.2f} |", "",
             f"Forward and backward (teacher and student) take **{compute / bare:.0%}** of the hand-written step. "
             f"`bench distill`'s Lightning loop runs at **{bare / loop:.2f}×** the hand-written loop's steps/s: "
             "its overhead is what separates the two (within run-to-run noise when the ratio is near 1)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    argv = sys.argv[1:] if argv is None else argv
    p = ArgumentParser(prog="python -m bench.tools.perf_distill", description=__doc__.splitlines()[0],
                       exit_on_error=False)
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
