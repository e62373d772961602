"""What building a model cost, in multiply-accumulates (MACs): a circuit's search and fit, a student's training.

MACs are counted from the shapes that ran (`models/macs.py`), so they are deterministic and device-free: they are
the budget that compares methods, with seconds beside them. A training step is a forward and a backward; see
`models.macs.STUDENT_STEP` and `FIT_STEP`. Evaluations that only watch a run (a student's validation, the final
test scores) are not counted; checks that decide something (the fit's plateau checks) are.
"""
from __future__ import annotations

from models.macs import STUDENT_STEP, pruned_macs
from models.pruned import PrunedConfig

PAPER_STEPS = 20000  # the paper's distillation budget ("20000 epochs")


def student_step_macs(student: PrunedConfig, teacher: PrunedConfig, batch: int, length: int, pooled: bool) -> int:
    """One training step of `batch` prompts of `length` tokens, the loss at the last position: the student's forward
    and backward, and the teacher's forward unless a pool holds its answers."""
    tokens = batch * length
    return STUDENT_STEP * pruned_macs(student, tokens, batch) + (0 if pooled else pruned_macs(teacher, tokens, batch))


def pool_macs(teacher: PrunedConfig, prompts: int, length: int) -> int:
    """The teacher's forward over a pool of `prompts` prompts of `length` tokens, logits at the last position."""
    return pruned_macs(teacher, prompts * length, prompts)


def training_macs(student: PrunedConfig, teacher: PrunedConfig, batch: int, lengths: list[int], pooled: bool,
                  steps: int, world: int = 1) -> int:
    """Steps 0..steps-1 on `world` devices, step k's prompts of lengths[k % len(lengths)] tokens."""
    per = [student_step_macs(student, teacher, batch, t, pooled) for t in lengths]
    full, rest = divmod(steps, len(per))
    return world * (full * sum(per) + sum(per[:rest]))


def matched_steps(target: int, start: int, student: PrunedConfig, teacher: PrunedConfig, batch: int,
                  lengths: list[int], pooled: bool, world: int = 1) -> int:
    """The fewest steps whose training MACs, with `start` MACs already spent (the pool), reach `target`: the
    student's build then costs what the matched run's did, within its last step."""
    per = [world * student_step_macs(student, teacher, batch, t, pooled) for t in lengths]
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

