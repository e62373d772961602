"""Test-set evaluation shared by every command: task accuracy (greedy answers) and KL to the full model.

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
