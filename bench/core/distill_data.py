"""The distillation student's training data: a seeded stream of fresh task prompts whose teacher logits are computed
in each step, or a bounded pool of them whose teacher logits are computed once (`--teacher-pool`); and the
evaluation splits in batches. Either way batch k is a pure function of (task, seed, rank, k), so --resume continues
exactly. Shapes: N prompts, T positions, V vocabulary.
"""
from __future__ import annotations

import copy
import itertools
import random
import time
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from bench.core.memory import require
from models.types import BenchError
from tasks.base import Example, Task, draw_examples
from tasks.data import SPLITS, TaskDataModule


class TaskStream(IterableDataset):
    """Training batches drawn afresh at every step from the task's training templates.

    Batch k (from `start` on) is a pure function of (task, seed, rank, k): a resumed run draws exactly what an
    uninterrupted one would, and each DDP rank draws its own prompts. Prompts in `exclude` (every evaluation split)
    are dropped, so training never sees one; that leaves a batch a prompt short about once in a blue moon."""

    def __init__(self, task: Task, tokenizer, seed: int, batch_size: int, exclude: frozenset[str], start: int = 0,
                 rank: int = 0, every_length: bool = False) -> None:
        # once: building the pools is the slow part
        self.spaces = task.fit_spaces(tokenizer) if every_length else task.spaces(tokenizer, heldout=False)
        self.task, self.seed, self.batch_size, self.exclude = task.name, seed, batch_size, exclude
        self.start, self.rank = start, rank

    @property
    def lengths(self) -> list[int]:
        """The token lengths of the stream's prompts (a batch has one of them)."""
        return sorted({s.length for s in self.spaces})

    def examples(self, k: int) -> list[Example]:
        """Step k's prompts, all of one length: that of template k mod (number of templates), so each length gets
        steps in proportion to its templates; the templates of that length take turns across steps as within one."""
        group = [s for s in self.spaces if s.length == self.spaces[k % len(self.spaces)].length]
        o = (k * self.batch_size) % len(group)
        spaces = group[o:] + group[:o]
        drawn = draw_examples(spaces, self.batch_size, self.seed, self.task, stream=f"distill/{self.rank}/{k}")
        return [e for e in drawn if e.prompt not in self.exclude]

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        ex = self.examples(k)
        return {"input_ids": torch.tensor([e.input_ids for e in ex]), "targets": torch.tensor([e.target for e in ex])}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (self.batch(k) for k in itertools.count(self.start))

    def at(self, start: int, rank: int) -> "TaskStream":
        """The same stream, its batches from step `start` of rank `rank`."""
        other = copy.copy(self)
        other.start, other.rank = start, rank
        return other

    def distinct(self, steps: int, ranks: int = 1) -> int:
        """How many distinct prompts steps 0..steps-1 of every rank hold (re-drawn: the stream is a function)."""
        return len({hash(e.prompt) for r in range(ranks) for k in range(steps) for e in self.at(0, r).examples(k)})


class TeacherPool(IterableDataset):
    """A bounded pool whose teacher outputs are computed once: the stream's first N distinct prompts, with the
    teacher's answer-position logits (N, V) kept on the CPU in the teacher's dtype. Training makes passes over it,
    each in a seeded random order; batch k (from `start` on) is a pure function of (seed, rank, k), like the
    stream's. Batches carry the logits as "teacher", so the step runs no teacher forward."""

    def __init__(self, ids: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor, seed: int, batch_size: int,
                 start: int = 0, rank: int = 0) -> None:
        self.ids, self.targets, self.logits = ids, targets, logits  # (N, T), (N, ...), (N, V)
        self.seed, self.batch_size, self.start, self.rank = seed, batch_size, start, rank
        self._orders: dict[int, torch.Tensor] = {}

    @classmethod
    def build(cls, stream: "TaskStream", size: int, teacher: Callable, device: torch.device) -> "TeacherPool":
        """The pool of `size` prompts from `stream`, the teacher run on them once in batches of the stream's:
        `teacher` maps ids (N, T) to logits (N, V) at the last position, or to (ids extended by its answers (N, T'),
        logits (N, P, V) at the last P positions), which the pool then keeps."""
        examples = first_distinct(stream, size)
        ids = torch.tensor([e.input_ids for e in examples])  # (N, T)
        with torch.no_grad():  # not inference_mode: the logits are loss targets in autograd later
            out = [teacher(b.to(device)) for b in ids.split(stream.batch_size)]
        if isinstance(out[0], tuple):
            ids = torch.cat([i.cpu() for i, _ in out])  # (N, T'): the prompts and the teacher's answers
            logits = torch.cat([x.cpu() for _, x in out])  # (N, P, V)
        else:
            logits = torch.cat([x.cpu() for x in out])  # (N, V)
        return cls(ids, torch.tensor([e.target for e in examples]), logits, stream.seed, stream.batch_size)

    def order(self, p: int) -> torch.Tensor:
        """Pass p's order of the pool (N,); this pass's and the one before are kept, for batches that span both."""
        if p not in self._orders:
            g = torch.Generator().manual_seed(random.Random(f"pool/{self.seed}/{self.rank}/{p}").getrandbits(63))
            self._orders = {q: o for q, o in self._orders.items() if q == p - 1}
            self._orders[p] = torch.randperm(len(self.ids), generator=g)
        return self._orders[p]

    def indices(self, k: int) -> torch.Tensor:
        """Pool rows of step k's batch (B,): positions kB..kB+B-1 of the passes laid end to end."""
        n, j = len(self.ids), torch.arange(k * self.batch_size, (k + 1) * self.batch_size)
        return torch.cat([self.order(int(p))[j[j // n == p] % n] for p in torch.unique(j // n)])

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        i = self.indices(k)
        return {"input_ids": self.ids[i], "targets": self.targets[i], "teacher": self.logits[i]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (self.batch(k) for k in itertools.count(self.start))

    def at(self, start: int, rank: int) -> "TeacherPool":
        """The same pool (shared tensors), its batches from step `start` of rank `rank`."""
        other = copy.copy(self)
        other.start, other.rank, other._orders = start, rank, {}
        return other

    def distinct(self, steps: int, ranks: int = 1) -> int:
        """How many pool prompts steps 0..steps-1 of every rank drew."""
        n, m = len(self.ids), steps * self.batch_size
        if m >= n:
            return n
        return len({i for r in range(ranks) for i in self.at(0, r).order(0)[:m].tolist()})


def first_distinct(stream: "TaskStream", size: int) -> list[Example]:
    """The first `size` distinct prompts of the stream."""
    seen: dict[str, Example] = {}
    for k in range(10 * size):
        for e in stream.examples(k):
            seen.setdefault(e.prompt, e)
        if len(seen) >= size:
            return list(seen.values())[:size]
    raise BenchError(f"the task's training templates hold fewer than {size:,} distinct prompts; give a smaller "
                     "--teacher-pool")


class DistillData(TaskDataModule):
    """The task's evaluation splits (val, test, test-heldout, in batches) and, for training, a `TaskStream` (or, with
    a `TeacherPool`, the pool) that starts at the trainer's step, so --resume continues where the checkpoint left
    it."""

    stream_args: tuple
    pool: TeacherPool | None = None
    pool_s: float = 0.0  # seconds the pool's teacher logits took

    @classmethod
    def wrap(cls, dm: TaskDataModule, task_name: str, seed: int, batch_size: int) -> "DistillData":
        out = cls.from_splits(task_name, dm.tokenizer, {name: dm.split(name) for name in SPLITS})
        out.batch_size, out.stream_args = batch_size, (seed, batch_size, eval_prompts(dm))
        return out

    def val_dataloader(self) -> list[DataLoader]:  # validation watches the held-out templates too
        return [self._loader("val"), self._loader("test-heldout")]

    def train_dataloader(self) -> DataLoader:
        step = self.trainer.global_step if self.trainer is not None else 0
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return DataLoader(self.training().at(step, rank), batch_size=None)

    def add_pool(self, size: int, teacher: Callable, vocab: int, device: torch.device) -> None:
        """Train on a `TeacherPool` of `size` stream prompts, its teacher logits computed now (timed: pool_s);
        refused in one line when its logits cannot fit the free memory."""
        require(size * vocab * torch.get_default_dtype().itemsize, torch.device("cpu"), f"--teacher-pool {size}",
                "its teacher logits", "lower --teacher-pool, or give 0 (the teacher in every step)")
        start = time.perf_counter()
        self.pool = TeacherPool.build(self.stream(), size, teacher, device)
        self.pool_s = time.perf_counter() - start

    def stream(self) -> TaskStream:
        return TaskStream(self.task, self.tokenizer, *self.stream_args)

    def distinct(self, steps: int, ranks: int = 1) -> int:
        """Distinct training prompts that steps 0..steps-1 of every rank saw."""
        return self.training().distinct(steps, ranks)

    def step_lengths(self, extra: int = 0) -> list[int]:
        """Step k's prompt length is step_lengths()[k % len(...)]: the pool's one length (its answers included), or
        the stream's templates' in turn, `extra` answer tokens added in the step."""
        if self.pool is not None:
            return [self.pool.ids.shape[1]]
        return [s.length + extra for s in self.stream().spaces]

    def training(self) -> "TaskStream | TeacherPool":
        """What the student trains on: the pool when there is one, else the stream."""
        return self.pool if self.pool is not None else self.stream()


def eval_prompts(dm: TaskDataModule) -> frozenset[str]:
    """Every prompt of every split (the run's patching prompts included): none may be trained on."""
    return frozenset(e.prompt for name in SPLITS for e in dm.split(name).examples)


