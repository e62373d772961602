"""Test-set evaluation shared by every command: task accuracy (greedy answers) and KL to the full model."""
from __future__ import annotations

import torch

from models.generate import LogitsFn, greedy
from models.search import kl_last
from tasks.base import Task
from tasks.data import Split, TaskAccuracy


@torch.inference_mode()
def accuracy(task: Task, tokenizer, fn: LogitsFn, split: Split) -> float:
    metric = TaskAccuracy(task, tokenizer)
    generated = greedy(fn, split.input_ids, task.n_new(tokenizer))
    metric.update(generated.cpu(), split.targets)
    return float(metric.compute())


@torch.inference_mode()
def kl_to(reference: LogitsFn, fn: LogitsFn, split: Split) -> float:
    """KL(reference || fn) of the next-token distribution at the last prompt position."""
    return kl_last(reference(split.input_ids), fn(split.input_ids))
