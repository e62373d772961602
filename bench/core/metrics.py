"""Test-set evaluation shared by every command: task accuracy (greedy answers), the task's own score where it has
one, and KL to the full model.

Both go through the split in batches of `batch_size` prompts, so memory is bounded by the batch, not the split."""
from __future__ import annotations

import torch

from models.generate import LogitsFn, greedy
from models.search import kl_sum
from tasks.base import Task
from tasks.data import Split, TaskAccuracy

BATCH_SIZE = 64  # the default of every verb's --batch-size


@torch.inference_mode()
def accuracy(task: Task, tokenizer, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> float:
    metric, n_new = TaskAccuracy(task, tokenizer), task.n_new(tokenizer)
    for ids, targets in zip(split.input_ids.split(batch_size), split.targets.split(batch_size)):
        metric.update(greedy(fn, ids, n_new).cpu(), targets)
    return float(metric.compute())


@torch.inference_mode()
def kl_to(reference: LogitsFn, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> float:
    """KL(reference || fn) of the next-token distribution at the last prompt position, averaged over the split."""
    return sum(kl_sum(reference(ids), fn(ids)) for ids in split.input_ids.split(batch_size)) / len(split)


@torch.inference_mode()
def scores(task: Task, tokenizer, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> dict | None:
    """The task's own score beside accuracy (`Task.score`, e.g. greater-than's probability difference), averaged
    over the split, and its gain: the score minus the same model's score against another prompt's target (the
    split's targets rolled by one). A model whose answers ignore the prompt gains nothing, whatever its accuracy
    and its score; a constant "99" scores 1 on greater-than and gains 0. None for a task without a score."""
    if task.score is None:
        return None
    own, other = split.targets, split.targets.roll(1)
    total = torch.zeros(2, dtype=torch.float64)
    for ids, a, b in zip(split.input_ids.split(batch_size), own.split(batch_size), other.split(batch_size)):
        total += torch.tensor([float(task.score(tokenizer, fn, ids, a).sum()),
                               float(task.score(tokenizer, fn, ids, b).sum())], dtype=torch.float64)
    s, base = (total / len(split)).tolist()
    return {"score": s, "score_gain": s - base}


def prefixed(prefix: str, values: dict | None) -> dict:
    """{"score": x} -> {"test_score": x}; nothing for None."""
    return {f"{prefix}_{k}": v for k, v in (values or {}).items()}
