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
RULES = ("mean", "bins")  # a candidate stays removed if the mean KL rises by < alpha; or if no bin's mean does
Item = TypeVar("Item")


def kl_rows(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(ref || other) between next-token distributions, per prompt: logits (N, V) -> (N,) float64 on the CPU."""
    ref = F.log_softmax(ref_logits.double(), dim=-1)
    cur = F.log_softmax(logits.double(), dim=-1)
    return (ref.exp() * (ref - cur)).sum(-1).cpu()


def kl_sum(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Sum over prompts of KL(ref || other) between next-token distributions; logits (N, V)."""
    return float(kl_rows(ref_logits, logits).sum())


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
                 cache_bytes: float = math.inf, bins: list[int] | None = None):
        groups = [ids] if isinstance(ids, torch.Tensor) else list(ids)
        self.batches = [b for g in groups for b in g.split(batch_size or max(1, g.shape[0]))]
        self.n = sum(g.shape[0] for g in groups)
        bins = torch.zeros(self.n, dtype=torch.long) if bins is None else torch.as_tensor(bins, dtype=torch.long)
        if bins.shape != (self.n,) or int(bins.min()) < 0:
            raise ValueError(f"bins must give each of the {self.n} prompts a bin index >= 0")
        self.bins = bins.split([b.shape[0] for b in self.batches])  # per batch: each prompt's bin
        self.counts = torch.bincount(bins).double()  # prompts per bin (a bin: e.g. a template's prompts)
        self.cache: BatchCache = BatchCache(self.build, cache_bytes)
        self.forwards = 0

    def build(self, ids: torch.Tensor):
        raise NotImplementedError

    def batch_rows(self, removed: frozenset[Component], i: int, ids: torch.Tensor) -> torch.Tensor:
        """Each prompt's KL in batch i with `removed` ablated: (B,) float64."""
        raise NotImplementedError

    def batch_rows_many(self, states: list[frozenset[Component]], i: int, ids: torch.Tensor) -> list[torch.Tensor]:
        """`batch_rows` of several states; an engine that can runs them together."""
        return [self.batch_rows(state, i, ids) for state in states]

    def batch_kl(self, removed: frozenset[Component], i: int, ids: torch.Tensor) -> float:
        return float(self.batch_rows(removed, i, ids).sum())

    def batch_kls(self, states: list[frozenset[Component]], i: int, ids: torch.Tensor) -> list[float]:
        return [float(r.sum()) for r in self.batch_rows_many(states, i, ids)]

    def bin_sums(self, states: list[frozenset[Component]], i: int, ids: torch.Tensor) -> list[torch.Tensor]:
        """Each state's KLs of batch i summed per bin: (bins,) float64 each."""
        zero = torch.zeros(len(self.counts), dtype=torch.float64)
        return [zero.index_add(0, self.bins[i], r) for r in self.batch_rows_many(states, i, ids)]

    def binned(self, states: list[frozenset[Component]]) -> list[torch.Tensor]:
        """The mean KL of each state in each bin, over every batch: (bins,) each."""
        sums = [torch.zeros(len(self.counts), dtype=torch.float64) for _ in states]
        for i, b in enumerate(self.batches):
            sums = [a + k for a, k in zip(sums, self.bin_sums(states, i, b))]
        return [s / self.counts.clamp(min=1) for s in sums]

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
    worst_bin: int | None = None  # the per-bin rule: the bin whose KL rose most (delta is its rise)


class Search:
    """Decides one candidate per `step`; `removed` holds what is ablated so far.

    With `speculate` = w > 1 a step scores the next w candidates of the current layer at once, each on top of the
    ones before it as if those stay removed (states R+c1, R+c1+c2, ...), through the scorer's `many` when it has
    one (the fast engine runs them as one batch). The candidates are then decided in order up to the first one
    that is kept: the states after it assumed it removed and are dropped. Every decision uses the KL of exactly
    the state the plain walk scores, so the circuit is the same; what changes is how many states one launch
    sequence scores (GPU), at the price of the dropped ones (all waste on a CPU, where w = 1 is fastest)."""

    def __init__(self, scorer: Scorer, order: Iterable[Component], alpha: float, speculate: int = 1,
                 rule: str = "mean"):
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
        self.scorer, self.order, self.alpha, self.speculate = scorer, list(order), alpha, speculate
        self.rule = rule
        self.removed: frozenset[Component] = frozenset()
        self.bin_kls = self._binned([self.removed])[0] if rule == "bins" else None  # (bins,) of `removed`
        self.kl = self._mean(self.bin_kls) if rule == "bins" else scorer(self.removed)  # 0 for an exact scorer
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

    def _binned(self, states: list[frozenset[Component]]) -> list[torch.Tensor]:
        binned = getattr(self.scorer, "binned", None)
        if binned is None:
            raise ValueError("the per-bin rule needs a scorer with bins (a BatchedScorer)")
        return binned(states)

    def _mean(self, kls: torch.Tensor) -> float:
        """The mean KL over every prompt, from the per-bin means."""
        counts = self.scorer.counts
        return float((kls * counts).sum() / counts.sum())

    def decide(self, kl: float | torch.Tensor) -> Step:
        """Decide `candidate`, given the KL with it ablated on top of `removed`: the mean over the prompts (rule
        "mean": it stays removed if the mean rises by less than alpha), or the mean of each bin (rule "bins": it
        stays removed only if no bin's mean rises by alpha or more)."""
        c = self.candidate
        if self.rule == "bins":
            rises = kl - self.bin_kls
            worst = int(rises.argmax())
            mean, delta = self._mean(kl), float(rises[worst])
        else:
            mean, worst = float(kl), None
            delta = mean - self.kl
        step = Step(len(self.steps), c, mean, delta, delta < self.alpha, worst)
        if step.removed:
            self.removed, self.kl = self.removed | {c}, mean
            if self.rule == "bins":
                self.bin_kls = kl
        self.steps.append(step)
        return step

    def decide_all(self, states: list[frozenset[Component]], kls: list) -> list[Step]:
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
        if self.rule == "bins":
            return self.decide_all(states, self._binned(states))
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

    def __init__(self, model: nn.Module, ids: torch.Tensor | list[torch.Tensor], means: Means,
                 batch_size: int | None = None, cache_bytes: float = math.inf, bins: list[int] | None = None):
        self.model, self.means = model, means
        super().__init__(ids, batch_size, cache_bytes, bins)

    def build(self, ids: torch.Tensor) -> torch.Tensor:
        return hooked_logits(self.model, ids, (), self.means)  # (B, V): the full model

    def batch_rows(self, removed: frozenset[Component], i: int, ids: torch.Tensor) -> torch.Tensor:
        self.count(i)
        return kl_rows(self.cache.get(i, ids), hooked_logits(self.model, ids, removed, self.means))
