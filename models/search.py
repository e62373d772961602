"""Algorithm 1: greedy ablation from the last layer to the first.

A `Scorer` maps a set of removed components to KL(full || ablated) of the next-token distribution at
the last position, averaged over the validation prompts. Any scorer (hooks on HF, TransformerLens
hooks, the fast engine) plugs into the same `Search`, so they can be checked against each other.

The validation prompts are scored in batches: a `BatchedScorer` sums each batch's KLs (`batch_kl`) and divides
by the number of prompts, so the KL, and so the circuit, does not depend on the batch size (up to fp summation
order). What a batch needs again for every candidate (the full model's logits, cached activations) is kept
while it fits a byte budget and rebuilt otherwise: memory is bounded by the batch and the budget, not the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from models.ablation import Means, hooked_logits
from models.types import Component

Scorer = Callable[[frozenset[Component]], float]
Item = TypeVar("Item")


def kl_sum(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Sum over prompts of KL(ref || other) between next-token distributions; logits (N, V)."""
    ref = F.log_softmax(ref_logits.double(), dim=-1)
    cur = F.log_softmax(logits.double(), dim=-1)
    return float((ref.exp() * (ref - cur)).sum())


def kl_last(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over prompts of KL(ref || other) between next-token distributions; logits (N, V)."""
    return kl_sum(ref_logits, logits) / ref_logits.shape[0]


def nbytes(item) -> int:
    """Bytes held by the tensors in `item` (a tensor, a list/tuple/dict of them, or an object with `nbytes`)."""
    if isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, (list, tuple)):
        return sum(nbytes(x) for x in item)
    if isinstance(item, dict):
        return sum(nbytes(x) for x in item.values())
    return int(getattr(item, "nbytes", 0))


class BatchCache(Generic[Item]):
    """`build(ids)` for batch i, kept while the kept items total at most `budget` bytes; later ones are rebuilt
    on every call (same values, more compute)."""

    def __init__(self, build: Callable[[torch.Tensor], Item], budget: float):
        self.build, self.budget, self.used = build, budget, 0
        self.kept: dict[int, tuple[torch.Tensor, Item]] = {}
        self.rebuilt = 0

    def get(self, i: int, ids: torch.Tensor) -> Item:
        if i in self.kept:
            seen, item = self.kept[i]
            if seen.shape != ids.shape or not torch.equal(seen, ids.to(seen.device)):
                raise RuntimeError(f"batch {i} changed between calls; batches must come in a fixed order")
            return item
        item = self.build(ids)
        size = nbytes(item)
        if self.used + size <= self.budget:
            self.kept[i], self.used = (ids.clone(), item), self.used + size
        else:
            self.rebuilt += 1
        return item


class BatchedScorer:
    """A `Scorer` over `ids` (N, T), or a list of such groups of other lengths, split into batches of `batch_size`
    (within a group: a batch has one length): `batch_kl(removed, i, ids)` is the sum of the KLs of batch i,
    `__call__` their mean over all N prompts. `cache_bytes` bounds what is kept between calls. `forwards` counts
    scored states (one per pass over the batches)."""

    def __init__(self, ids: torch.Tensor | list[torch.Tensor], batch_size: int | None = None,
                 cache_bytes: float = math.inf):
        groups = [ids] if isinstance(ids, torch.Tensor) else list(ids)
        self.batches = [b for g in groups for b in g.split(batch_size or max(1, g.shape[0]))]
        self.n = sum(g.shape[0] for g in groups)
        self.cache: BatchCache = BatchCache(self.build, cache_bytes)
        self.forwards = 0

    def build(self, ids: torch.Tensor):
        raise NotImplementedError

    def batch_kl(self, removed: frozenset[Component], i: int, ids: torch.Tensor) -> float:
        raise NotImplementedError

    def batch_kls(self, states: list[frozenset[Component]], i: int, ids: torch.Tensor) -> list[float]:
        """`batch_kl` of several states; an engine that can runs them together."""
        return [self.batch_kl(state, i, ids) for state in states]

    def __call__(self, removed: frozenset[Component]) -> float:
        return self.many([removed])[0]

    def many(self, states: list[frozenset[Component]]) -> list[float]:
        """The mean KL of each state over all N prompts: each batch's sums added up, then divided by N."""
        sums = [0.0] * len(states)
        for i, b in enumerate(self.batches):
            sums = [a + k for a, k in zip(sums, self.batch_kls(states, i, b))]
        return [x / self.n for x in sums]

    def count(self, i: int) -> None:
        self.forwards += i == 0


@dataclass(frozen=True)
class Step:
    """One decision of Algorithm 1."""

    index: int
    component: Component
    kl: float  # KL with the candidate ablated on top of what was removed before
    delta: float  # kl minus the KL before this step
    removed: bool  # True: it stays removed; False: it joins the circuit


class Search:
    """Decides one candidate per `step`; `removed` holds what is ablated so far.

    With `speculate` = w > 1 a step scores the next w candidates of the current layer at once, each on top of the
    ones before it as if those stay removed (states R+c1, R+c1+c2, ...), through the scorer's `many` when it has
    one (the fast engine runs them as one batch). The candidates are then decided in order up to the first one
    that is kept: the states after it assumed it removed and are dropped. Every decision uses the KL of exactly
    the state the plain walk scores, so the circuit is the same; what changes is how many states one launch
    sequence scores (GPU), at the price of the dropped ones (all waste on a CPU, where w = 1 is fastest)."""

    def __init__(self, scorer: Scorer, order: Iterable[Component], alpha: float, speculate: int = 1):
        self.scorer, self.order, self.alpha, self.speculate = scorer, list(order), alpha, speculate
        self.removed: frozenset[Component] = frozenset()
        self.kl = scorer(self.removed)  # 0 for an exact scorer; kept for honesty
        self.steps: list[Step] = []
        self.asked: list[frozenset[Component]] = [self.removed]  # every state the scorer scored, in order

    @property
    def candidate(self) -> Component:
        """The next component to decide."""
        return self.order[len(self.steps)]

    def states(self) -> list[frozenset[Component]]:
        """The states the next step scores: the next `speculate` candidates of the candidate's layer, each
        removed on top of `removed` and of the ones before it."""
        out, state = [], self.removed
        for c in self.order[len(self.steps):len(self.steps) + self.speculate]:
            if c.layer != self.candidate.layer:
                break
            state = state | {c}
            out.append(state)
        return out

    def decide(self, kl: float) -> Step:
        """Decide `candidate`, given the KL with it ablated on top of `removed`."""
        c, delta = self.candidate, kl - self.kl
        step = Step(len(self.steps), c, kl, delta, delta < self.alpha)
        if step.removed:
            self.removed, self.kl = self.removed | {c}, kl
        self.steps.append(step)
        return step

    def decide_all(self, states: list[frozenset[Component]], kls: list[float]) -> list[Step]:
        """Decide in order the candidates that `states` (from `states()`) added, given their KLs, up to and
        including the first one kept."""
        self.asked.extend(states)
        out = []
        for kl in kls:
            out.append(self.decide(kl))
            if not out[-1].removed:
                break
        return out

    def step(self) -> list[Step]:
        states = self.states()
        many = getattr(self.scorer, "many", None)
        return self.decide_all(states, many(states) if many else [self.scorer(s) for s in states])

    def scored_states(self) -> list[frozenset[Component]]:
        """Every removed set the scorer was asked about, in order, the empty start and the dropped speculative
        states included."""
        return list(self.asked)

    @property
    def done(self) -> bool:
        return len(self.steps) == len(self.order)

    def run(self) -> frozenset[Component]:
        while not self.done:
            self.step()
        return self.removed


class HookScorer(BatchedScorer):
    """The plain reference: one full forward of the HF model with ablation hooks per batch and call."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, means: Means, batch_size: int | None = None,
                 cache_bytes: float = math.inf):
        self.model, self.means = model, means
        super().__init__(ids, batch_size, cache_bytes)

    def build(self, ids: torch.Tensor) -> torch.Tensor:
        return hooked_logits(self.model, ids, (), self.means)  # (B, V): the full model

    def batch_kl(self, removed: frozenset[Component], i: int, ids: torch.Tensor) -> float:
        self.count(i)
        return kl_sum(self.cache.get(i, ids), hooked_logits(self.model, ids, removed, self.means))
