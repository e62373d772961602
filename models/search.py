"""Algorithm 1: greedy ablation from the last layer to the first.

A `Scorer` maps a set of removed components to KL(full || ablated) of the next-token distribution at
the last position, averaged over the validation prompts. Any scorer (hooks on HF, TransformerLens
hooks, the fast engine) plugs into the same `Search`, so they can be checked against each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from models.ablation import Means, hooked_logits
from models.types import Component

Scorer = Callable[[frozenset[Component]], float]


def kl_last(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over prompts of KL(ref || other) between next-token distributions; logits (N, V)."""
    ref = F.log_softmax(ref_logits.double(), dim=-1)
    cur = F.log_softmax(logits.double(), dim=-1)
    return float((ref.exp() * (ref - cur)).sum(-1).mean())


@dataclass(frozen=True)
class Step:
    """One decision of Algorithm 1."""

    index: int
    component: Component
    kl: float  # KL with the candidate ablated on top of what was removed before
    delta: float  # kl minus the KL before this step
    removed: bool  # True: it stays removed; False: it joins the circuit


class Search:
    """Decides one candidate per `step`; `removed` holds what is ablated so far."""

    def __init__(self, scorer: Scorer, order: Iterable[Component], alpha: float):
        self.scorer, self.order, self.alpha = scorer, list(order), alpha
        self.removed: frozenset[Component] = frozenset()
        self.kl = scorer(self.removed)  # 0 for an exact scorer; kept for honesty
        self.steps: list[Step] = []

    def step(self) -> Step:
        c = self.order[len(self.steps)]
        kl = self.scorer(self.removed | {c})
        delta = kl - self.kl
        step = Step(len(self.steps), c, kl, delta, delta < self.alpha)
        if step.removed:
            self.removed, self.kl = self.removed | {c}, kl
        self.steps.append(step)
        return step

    def scored_states(self) -> list[frozenset[Component]]:
        """Every removed set the scorer was asked about, in order, the empty start included."""
        out, removed = [frozenset()], frozenset()
        for st in self.steps:
            out.append(removed | {st.component})
            removed = out[-1] if st.removed else removed
        return out

    @property
    def done(self) -> bool:
        return len(self.steps) == len(self.order)

    def run(self) -> frozenset[Component]:
        while not self.done:
            self.step()
        return self.removed


class HookScorer:
    """The plain reference: one full forward of the HF model with ablation hooks per call."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, means: Means):
        self.model, self.ids, self.means = model, ids, means
        self.ref = hooked_logits(model, ids, (), means)  # (N, V) full model
        self.forwards = 0

    def __call__(self, removed: frozenset[Component]) -> float:
        self.forwards += 1
        return kl_last(self.ref, hooked_logits(self.model, self.ids, removed, self.means))
