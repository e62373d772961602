"""What building a model cost, in multiply-accumulates (MACs): a circuit's search and fit, a student's training.

MACs are counted from the shapes that ran (`models/macs.py`), so they are deterministic and device-free: they are
the budget that compares methods, with seconds beside them. A training step is a forward and a backward; see
`models.macs.STUDENT_STEP` and `FIT_STEP`. Evaluations that only watch a run (a student's validation, the final
test scores) are not counted; checks that decide something (the fit's plateau checks) are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from models.macs import STUDENT_STEP, pruned_macs
from models.pruned import PrunedConfig

PAPER_STEPS = 20000  # the paper's distillation budget ("20000 epochs")


def student_step_macs(student: PrunedConfig, teacher: PrunedConfig, batch: int, length: int, pooled: bool,
                      rows: int = 1) -> int:
    """One training step of `batch` prompts of `length` tokens (their answers included), the loss at `rows`
    positions of each: the student's forward and backward, and the teacher's forward unless a pool holds its
    answers."""
    tokens, scored = batch * length, batch * rows
    return STUDENT_STEP * pruned_macs(student, tokens, scored) + (0 if pooled else pruned_macs(teacher, tokens, scored))


def pool_macs(teacher: PrunedConfig, prompts: int, length: int, rows: int = 1) -> int:
    """The teacher's forward over a pool of `prompts` prompts of `length` tokens, logits at `rows` positions each."""
    return pruned_macs(teacher, prompts * length, prompts * rows)


def training_macs(student: PrunedConfig, teacher: PrunedConfig, batch: int, lengths: list[int], pooled: bool,
                  steps: int, world: int = 1, rows: Callable[[int], int] = lambda t: 1) -> int:
    """Steps 0..steps-1 on `world` devices, step k's prompts of lengths[k % len(lengths)] tokens, the loss at
    rows(length) positions of each."""
    per = [student_step_macs(student, teacher, batch, t, pooled, rows(t)) for t in lengths]
    full, rest = divmod(steps, len(per))
    return world * (full * sum(per) + sum(per[:rest]))


def matched_steps(target: int, start: int, student: PrunedConfig, teacher: PrunedConfig, batch: int,
                  lengths: list[int], pooled: bool, world: int = 1, rows: Callable[[int], int] = lambda t: 1) -> int:
    """The fewest steps whose training MACs, with `start` MACs already spent (the pool), reach `target`: the
    student's build then costs what the matched run's did, within its last step."""
    per = [world * student_step_macs(student, teacher, batch, t, pooled, rows(t)) for t in lengths]
    need = max(0, target - start)
    full = need // sum(per)
    left, steps = need - full * sum(per), full * len(per)
    for p in per:
        if left <= 0:
            break
        left, steps = left - p, steps + 1
    return max(1, steps)


def in_words(steps: int, batch: int, macs: int, seconds: float) -> str:
    """A student's budget as a report states it: steps × batch, MACs, seconds and share of the paper's steps."""
    return (f"{steps:,} steps × {batch} prompts, {macs:.3g} MACs, {seconds:,.0f} s, "
            f"{steps / PAPER_STEPS:.1%} of the paper's {PAPER_STEPS:,} steps")



@dataclass(frozen=True)
class StudentCost:
    """What a distillation costs, from its shapes: a pool of `pool` (prompts, length) if any, then steps of `batch`
    prompts of lengths[k % len(lengths)] tokens on `world` devices, the loss at rows(length) positions of each."""

    student: PrunedConfig
    teacher: PrunedConfig
    batch: int
    lengths: list[int]
    pool: tuple[int, int] | None
    world: int = 1
    rows: Callable[[int], int] = field(default=lambda t: 1)

    @property
    def pool_macs(self) -> int:
        return pool_macs(self.teacher, *self.pool, self.rows(self.pool[1])) if self.pool else 0

    def train_macs(self, steps: int) -> int:
        return training_macs(self.student, self.teacher, self.batch, self.lengths, self.pool is not None, steps,
                             self.world, self.rows)

    def matched(self, target: int) -> int:
        """The fewest steps whose MACs, the pool's included, reach `target`."""
        return matched_steps(target, self.pool_macs, self.student, self.teacher, self.batch, self.lengths,
                             self.pool is not None, self.world, self.rows)

    def block(self, steps: int, budget: str, target: int | None) -> dict:
        """metrics.json's train block, its cost: MACs of the pool and of the steps, the budget, the matched target."""
        train = self.train_macs(steps)
        return {"budget": budget, "pool_macs": self.pool_macs, "train_macs": train, "macs": self.pool_macs + train,
                "target_macs": target, "paper_share": steps / PAPER_STEPS}
