"""Test-set evaluation shared by every command: task accuracy (greedy answers), the task's own score where it has
one, and KL to the full model.

Both go through the split in batches of `batch_size` prompts, so memory is bounded by the batch, not the split."""
from __future__ import annotations

import torch

from models.generate import LogitsFn, greedy
from models.search import kl_sum
from tasks.base import Task
from tasks.data import Split

BATCH_SIZE = 64  # the default of every verb's --batch-size


def accuracy(task: Task, tokenizer, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> float:
    """The share of the split's prompts whose greedy answer the task judges correct."""
    ok = correct_each(task, tokenizer, fn, split, batch_size)
    return sum(ok) / len(ok)


@torch.inference_mode()
def correct_each(task: Task, tokenizer, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> list[bool]:
    """Whether the task judges each prompt's greedy answer correct, in `split.ordered` (the split's order where it
    has one length)."""
    n_new, ok = task.n_new(tokenizer), []
    for b in split.batches(batch_size):
        ok += task.correct(tokenizer, b.targets, greedy(fn, b.input_ids, n_new).cpu()).tolist()
    return ok


def by_template(task: Task, split: Split, ok: list[bool]) -> dict[str, float]:
    """Accuracy on each template's prompts of the split (`Task.template_of` names them), sorted by name."""
    groups: dict[str, list[bool]] = {}
    for e, right in zip(split.ordered, ok):
        groups.setdefault(task.template_of(e.prompt) or "?", []).append(right)
    return {name: sum(g) / len(g) for name, g in sorted(groups.items())}


def accuracies(task: Task, tokenizer, fn: LogitsFn, split: Split,
               batch_size: int = BATCH_SIZE) -> tuple[float, dict[str, float]]:
    """`accuracy` and `by_template` from one pass of greedy answers."""
    ok = correct_each(task, tokenizer, fn, split, batch_size)
    return sum(ok) / len(ok), by_template(task, split, ok)


def worst(mine: dict[str, float], full: dict[str, float]) -> dict:
    """The template where `mine` falls furthest under the full model: its name, accuracy and the full model's, and
    the difference in points (ties: the first by name)."""
    name = min(mine, key=lambda k: (mine[k] - full.get(k, mine[k]), k))
    return {"template": name, "accuracy": mine[name], "full_accuracy": full.get(name, mine[name]),
            "delta_pts": 100 * (mine[name] - full.get(name, mine[name]))}


@torch.inference_mode()
def kl_to(reference: LogitsFn, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> float:
    """KL(reference || fn) of the next-token distribution at the last prompt position, averaged over the split."""
    return sum(kl_sum(reference(b.input_ids), fn(b.input_ids)) for b in split.batches(batch_size)) / len(split)


@torch.inference_mode()
def scores(task: Task, tokenizer, fn: LogitsFn, split: Split, batch_size: int = BATCH_SIZE) -> dict | None:
    """The task's own score beside accuracy (`Task.score`, e.g. greater-than's probability difference), averaged
    over the split, and its gain: the score minus the same model's score against another prompt's target (the
    split's targets rolled by one). A model whose answers ignore the prompt gains nothing, whatever its accuracy
    and its score; a constant "99" scores 1 on greater-than and gains 0. None for a task without a score."""
    if task.score is None:
        return None
    batches = split.batches(batch_size)
    other = torch.cat([b.targets for b in batches]).roll(1).split([len(b) for b in batches])
    total = torch.zeros(2, dtype=torch.float64)
    for b, o in zip(batches, other):
        total += torch.tensor([float(task.score(tokenizer, fn, b.input_ids, b.targets).sum()),
                               float(task.score(tokenizer, fn, b.input_ids, o).sum())], dtype=torch.float64)
    s, base = (total / len(split)).tolist()
    return {"score": s, "score_gain": s - base}


def prefixed(prefix: str, values: dict | None) -> dict:
    """{"score": x} -> {"test_score": x}; nothing for None."""
    return {f"{prefix}_{k}": v for k, v in (values or {}).items()}
