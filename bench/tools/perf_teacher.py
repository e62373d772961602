"""Benchmark: the teacher's logits in every step of the stream, or cached once for a bounded pool?

`bench distill` computes the teacher's answer-position logits in each step, on prompts never seen before. The
alternative is a pool of P prompts whose teacher outputs are computed once and reused for every pass: either the
full logits (exact, P × V floats) or their bounded form, the top-k log-probabilities plus the rest's mass. This
trains copies of the same student for the same steps and batch size all three ways and reports the wall time and
the full KL to the teacher (and accuracy) on the validation and held-out-template splits:

    python -m bench.tools.perf_teacher --model smollm2-135m --task ioi --steps 150 --out results/distill-teacher-cpu.md
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
import torch.nn.functional as F

from bench.cli import quiet_libraries
from bench.core.distill_data import TaskStream, TeacherPool, eval_prompts
from bench.core.distillation import (DistillationModule, init_student, l_distill,
                                student_config, teacher_config)
from bench.core.metrics import accuracy, kl_to
from bench.core.latency import device_name
from models import arch, loading
from models.pruned import count_params
from models.types import BenchError
from tasks import get_task
from tasks.data import TaskDataModule


def top_k_targets(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounded form of teacher logits (N, V): top-k token ids (N, k) and log-probs (N, k + 1), the last
    column being the log of the mass of every other token."""
    log_p = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    top, idx = log_p.topk(k, dim=-1)  # (N, k)
    return idx, torch.cat([top, rest_mass(log_p, idx)[:, None]], dim=-1)


def rest_mass(log_p: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """log of the probability of every token but `idx`; log_p (N, V), idx (N, k) -> (N,)."""
    return torch.logsumexp(log_p.scatter(-1, idx, float("-inf")), dim=-1)


def l_distill_top_k(student: torch.Tensor, idx: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) over the k + 1 bins of `top_k_targets` (the k tokens and the rest), mean over prompts."""
    log_s = F.log_softmax(student.float(), dim=-1)  # (N, V)
    log_q = torch.cat([log_s.gather(-1, idx), rest_mass(log_s, idx)[:, None]], dim=-1)  # (N, k + 1)
    return F.kl_div(log_q, log_t, log_target=True, reduction="batchmean")


def stream_batches(stream: TaskStream, steps: int, device):
    """Step k's fresh prompts; the teacher runs on each."""
    for k in range(steps):
        yield stream.batch(k)["input_ids"].to(device), None


def pool_batches(pool: TeacherPool, targets: tuple, steps: int, device):
    """`bench distill --teacher-pool`'s batches (seeded passes over the pool) with the cached teacher targets."""
    for k in range(steps):
        i = pool.indices(k)
        yield pool.ids[i].to(device), tuple(t[i].to(device) for t in targets)


def loss_of(module: DistillationModule, ids: torch.Tensor, cached: tuple | None) -> torch.Tensor:
    """L_distill of the student on a batch: against the teacher now, its cached logits, or its cached top-k."""
    student = module(ids)  # (N, V)
    if cached is None:
        return l_distill(student, module.teacher_logits(ids))
    if len(cached) == 1:
        return l_distill(student, cached[0])
    return l_distill_top_k(student, *cached)


def train(module: DistillationModule, batches, device) -> float:
    """Adam over the batches; wall seconds."""
    opt = module.configure_optimizers()
    start = time.perf_counter()
    for ids, cached in batches:
        loss_of(module, ids, cached).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def scores(module: DistillationModule, task, tok, dm: TaskDataModule, batch: int, device) -> dict[str, float]:
    """Full KL to the teacher and task accuracy on val and the held-out templates."""
    module.eval()
    fn = lambda ids: module(ids.to(device)).float()  # noqa: E731
    teacher = lambda ids: module.teacher_logits(ids.to(device)).float()  # noqa: E731
    out = {}
    for name, split in (("val", dm.val), ("heldout", dm.heldout)):
        out[f"{name}_kl"] = kl_to(teacher, fn, split, batch)
        out[f"{name}_accuracy"] = accuracy(task, tok, fn, split, batch)
    return out


VARIANTS = ("in the step, fresh stream", "cached pool, full logits", "cached pool, top-k + rest")


def measure(args: argparse.Namespace) -> dict:
    device = loading.resolve_device(args.device)
    teacher, tok = loading.load_model(args.model, device=device)
    s, task = arch.check_supported(teacher), get_task(args.task)
    if args.top_k >= s.vocab_size:
        raise BenchError(f"--top-k must be below the vocabulary size ({s.vocab_size})")
    dm = TaskDataModule(task, tok, 1, args.n_eval, args.n_eval, args.seed)
    dm.setup()
    stream = TaskStream(task, tok, args.seed, args.batch_size, eval_prompts(dm))
    shape = (args.layers or max(1, s.n_layers // 4), s.n_heads, s.d_mlp)
    student = init_student(student_config(teacher_config(teacher), s.group, *shape), teacher, args.seed)
    rows = []
    for variant, k in zip(VARIANTS, (None, None, args.top_k)):
        module = DistillationModule(copy.deepcopy(student), teacher, task, tok).to(device)
        module.on_fit_start()
        if rows:  # the pool's teacher forward is timed in each variant: part of its cost
            start = time.perf_counter()
            pool = TeacherPool.build(stream, args.pool, module.teacher_logits, device)
            targets = (pool.logits,) if k is None else top_k_targets(pool.logits, k)
            build, distinct = time.perf_counter() - start, len(pool.ids)
            batches = pool_batches(pool, targets, args.steps, device)
        else:
            build, distinct, batches = 0.0, stream.distinct(args.steps), stream_batches(stream, args.steps, device)
        wall = train(module.train(), batches, device)
        rows.append({"variant": variant, "distinct": distinct, "build_s": build, "train_s": wall,
                     **scores(module, task, tok, dm, args.batch_size, device)})
        print(rows[-1], file=sys.stderr, flush=True)
    untrained = DistillationModule(copy.deepcopy(student), teacher, task, tok).to(device)
    return {"rows": rows, "untrained": scores(untrained, task, tok, dm, args.batch_size, device), "device": device,
            "shape": shape, "params": count_params(student)["non_embedding"], "t": stream.spaces[0].length}


def report(r: dict, args: argparse.Namespace, argv: list[str]) -> str:
    device, (layers, heads, d_mlp), u = r["device"], r["shape"], r["untrained"]
    name = device_name(device)
    lines = [f"# Teacher logits: in every step, or cached for a pool — {args.model}, {args.task}", "",
             f"Command: `python -m bench.tools.perf_teacher {' '.join(argv)}`", "",
             f"Device: {name}; torch {torch.__version__}; fp32. Three copies of one student ({layers} layers, {heads} "
             f"heads, d_mlp {d_mlp}, {r['params']:,} non-embedding params) each take {args.steps} Adam steps (lr 1e-3) "
             f"of {args.batch_size} prompts × {r['t']} tokens. The pool is the stream's first {args.pool} distinct "
             f"prompts, reused in seeded passes ({args.steps * args.batch_size / args.pool:.1f} passes); top-k keeps "
             f"k = {args.top_k}. KL is the full KL to the teacher on {args.n_eval} validation and {args.n_eval} "
             "held-out-template prompts.", "",
             "| teacher logits | distinct prompts | teacher cache s | training s | total s | ms/step | val KL "
             "| held-out KL | val acc | held-out acc |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: |",
             f"| (untrained student) | | | | | | {u['val_kl']:.3f} | {u['heldout_kl']:.3f} | {u['val_accuracy']:.0%} "
             f"| {u['heldout_accuracy']:.0%} |"]
    for row in r["rows"]:
        total = row["build_s"] + row["train_s"]
        lines.append(f"| {row['variant']} | {row['distinct']:,} | {row['build_s']:.1f} | {row['train_s']:.1f} "
                     f"| {total:.1f} | {row['train_s'] / args.steps * 1e3:.0f} | {row['val_kl']:.3f} "
                     f"| {row['heldout_kl']:.3f} | {row['val_accuracy']:.0%} | {row['heldout_accuracy']:.0%} |")
    base = r["rows"][0]
    base_total = base["build_s"] + base["train_s"]
    for row in r["rows"][1:]:
        speed, held = base_total / (row["build_s"] + row["train_s"]), row["heldout_kl"] / base["heldout_kl"]
        lines += ["", f"{row['variant']}: **{speed:.2f}×** the in-step variant's speed (teacher cache included), at "
                  f"**{held:.2f}×** its held-out KL and {row['val_kl'] / base['val_kl']:.2f}× its validation KL."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.tools.perf_teacher", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=loading.DEFAULT_MODEL)
    p.add_argument("--task", default="ioi")
    p.add_argument("--steps", type=int, default=150, help="Adam steps per variant")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pool", type=int, default=1200, help="prompts in the cached pool")
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--layers", type=int, default=None, help="student layers (default: a quarter of the teacher's)")
    p.add_argument("--n-eval", type=int, default=200, help="validation and held-out prompts each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the markdown report here too")
    args = p.parse_args(argv)
    try:
        for name in ("steps", "batch_size", "pool", "top_k", "n_eval"):
            if getattr(args, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1")
        r = measure(args)  # measure refuses a --top-k that leaves no rest
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(r, args, argv)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
