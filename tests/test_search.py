"""Algorithm 1's semantics on a hand-computable scorer, and fast path == reference path on tiny models."""
import pytest

from models.ablation import collect_means
from models.fast import FastScorer
from models.search import BatchedScorer, HookScorer, Search, kl_last
from models.types import SCHEMES, BenchError, Component, candidate_order
from tests.test_surgery import MODELS, random_removed
from tests.tiny import tiny_ids

import torch


def test_order_is_last_layer_first_heads_then_mlp():
    assert [str(c) for c in candidate_order(2, 2, True)] == ["L1.H0", "L1.H1", "L1.MLP", "L0.H0", "L0.H1", "L0.MLP"]
    assert all(not c.is_mlp for c in candidate_order(3, 2, False))


def test_greedy_decisions_by_hand():
    # KL = sum of per-component costs, except L1.H0 and L0.H0 are redundant: removing both costs 0.5.
    cost = {Component(1, 0): 0.01, Component(1, 1): 0.3, Component(1): 0.02, Component(0, 0): 0.01,
            Component(0, 1): 0.05, Component(0): 0.0}

    def score(removed):
        kl = sum(cost[c] for c in removed)
        return kl + (0.5 if {Component(1, 0), Component(0, 0)} <= removed else 0.0)

    search = Search(score, candidate_order(2, 2, True), alpha=0.03)
    removed = search.run()
    # L1.H0 +0.01 removed; L1.H1 +0.3 kept; L1.MLP +0.02 removed; L0.H0 +0.51 kept; L0.H1 +0.05 kept; L0.MLP +0 removed
    assert removed == {Component(1, 0), Component(1), Component(0)}
    assert [s.removed for s in search.steps] == [True, False, True, False, False, True]
    assert search.kl == pytest.approx(0.03)
    assert search.steps[3].delta == pytest.approx(0.51)


def test_alpha_bounds():
    order = candidate_order(2, 2, True)
    score = lambda removed: 0.1 * len(removed)  # noqa: E731
    assert Search(score, order, alpha=0.0).run() == frozenset()
    assert Search(score, order, alpha=float("inf")).run() == frozenset(order)


def test_kl_last_by_hand():
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    cur = torch.log(torch.tensor([[0.25, 0.75]]))
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.5 * torch.log(torch.tensor(2 / 3))
    assert kl_last(ref, cur) == pytest.approx(float(expected))
    assert kl_last(ref, ref) == 0.0


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_fast_scorer_equals_hooks(arch, scheme):
    model = MODELS[arch](1)
    means = collect_means(model, tiny_ids(8, 10, seed=4), scheme)
    ids = tiny_ids(6, 10, seed=5)
    hook, fast = HookScorer(model, ids, means), FastScorer(model, ids, means)
    for seed in range(4):
        removed = frozenset(random_removed(model, seed))
        assert fast(removed) == pytest.approx(hook(removed), abs=1e-5)


def search_setup(arch: str, scheme: str, include_mlps: bool = True):
    """A tiny model (seed 2), its means (patching prompts seed 6), validation prompts (seed 7), candidate order."""
    model = MODELS[arch](2)
    means = collect_means(model, tiny_ids(8, 10, seed=6), scheme)
    order = candidate_order(model.config.num_hidden_layers, model.config.num_attention_heads, include_mlps)
    return model, means, tiny_ids(6, 10, seed=7), order


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("include_mlps", [True, False])
def test_fast_path_returns_the_reference_circuit(arch, scheme, include_mlps):
    model, means, ids, order = search_setup(arch, scheme, include_mlps)
    sizes = set()
    for alpha in (0.005, 0.02, 0.1):
        ref = Search(HookScorer(model, ids, means), order, alpha).run()
        assert Search(FastScorer(model, ids, means), order, alpha).run() == ref
        sizes.add(len(ref))
    assert any(0 < n < len(order) for n in sizes)  # some alpha gives a mixed circuit, so the check bites


def test_speculation_decides_by_hand_with_the_plain_walks_kls():
    """The hand-computed example again, scoring a layer's candidates at once: same decisions, same KLs, and the
    states after a kept candidate are scored but dropped."""
    cost = {Component(1, 0): 0.01, Component(1, 1): 0.3, Component(1): 0.02, Component(0, 0): 0.01,
            Component(0, 1): 0.05, Component(0): 0.0}
    pair = {Component(1, 0), Component(0, 0)}
    score = lambda removed: sum(cost[c] for c in removed) + 0.5 * (pair <= removed)  # noqa: E731
    plain = Search(score, candidate_order(2, 2, True), alpha=0.03)
    fast = Search(score, candidate_order(2, 2, True), alpha=0.03, speculate=3)
    assert fast.run() == plain.run()
    assert [(s.component, s.kl, s.removed) for s in fast.steps] == [(s.component, s.kl, s.removed) for s in plain.steps]
    # L1: [H0, H0+H1, H0+H1+MLP], H1 kept -> [H0+MLP]; L0: [H0, ...] H0 kept -> [H1, H1+MLP], H1 kept -> [MLP]
    assert len(fast.scored_states()) == 1 + 3 + 1 + 3 + 2 + 1
    assert plain.scored_states() == [frozenset()] + [s for s in fast.scored_states()[1:] if s in plain.scored_states()]


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_speculative_fast_engine_returns_the_plain_circuit(arch, scheme):
    """States run stacked in one batch through the fast engine: the same KLs (to float noise) and circuit."""
    model, means, ids, order = search_setup(arch, scheme)
    sizes = set()
    for alpha in (0.005, 0.02, 0.1):
        plain = Search(FastScorer(model, ids, means, batch_size=4), order, alpha)
        plain.run()
        for width in (2, len(order)):
            fast = Search(FastScorer(model, ids, means, batch_size=4), order, alpha, speculate=width)
            assert fast.run() == plain.removed
            assert [s.kl for s in fast.steps] == pytest.approx([s.kl for s in plain.steps], rel=1e-6, abs=1e-9)
            assert fast.scorer.forwards == len(fast.scored_states())  # dropped states counted too
        sizes.add(len(plain.removed))
    assert any(0 < n < len(order) for n in sizes)


POSITION_FREE = [name for name, s in SCHEMES.items() if not s.positional]


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", POSITION_FREE)
def test_mixed_lengths_score_exactly_with_either_engine_and_any_batch(arch, scheme):
    """Validation prompts of three lengths, one batch per length or several: the KL is the mean over every prompt,
    the engines agree, and the batch size changes nothing but float noise."""
    model = MODELS[arch](3)
    patching = [tiny_ids(4, t, seed=10 + t) for t in (7, 10)]
    means = collect_means(model, patching, scheme)
    groups = [tiny_ids(n, t, seed=20 + t) for n, t in ((3, 6), (4, 10), (2, 12))]
    for seed in range(3):
        removed = frozenset(random_removed(model, seed))
        each = [(g.shape[0], HookScorer(model, g, means)(removed)) for g in groups]
        mean = sum(n * kl for n, kl in each) / sum(n for n, _ in each)
        for batch in (None, 1, 3):
            assert HookScorer(model, groups, means, batch)(removed) == pytest.approx(mean, abs=1e-6)
            assert FastScorer(model, groups, means, batch)(removed) == pytest.approx(mean, abs=1e-5)


@pytest.mark.parametrize("scheme", POSITION_FREE)
def test_mixed_lengths_give_the_reference_circuit(scheme):
    model = MODELS["llama-gqa"](2)
    means = collect_means(model, [tiny_ids(4, t, seed=30 + t) for t in (8, 11)], scheme)
    groups = [tiny_ids(4, 8, seed=40), tiny_ids(3, 11, seed=41)]
    order = candidate_order(model.config.num_hidden_layers, model.config.num_attention_heads, True)
    sizes = set()
    for alpha in (0.005, 0.02, 0.1):
        ref = Search(HookScorer(model, groups, means), order, alpha).run()
        for batch in (None, 2):
            assert Search(FastScorer(model, groups, means, batch), order, alpha).run() == ref
        sizes.add(len(ref))
    assert any(0 < n < len(order) for n in sizes)


def test_pooled_means_over_lengths_are_the_mean_over_every_position():
    model = MODELS["gpt2"](0)
    a, b = tiny_ids(3, 6, seed=1), tiny_ids(2, 9, seed=2)
    both = collect_means(model, [a, b], "mean-pooled")
    ma, mb = collect_means(model, a, "mean-pooled"), collect_means(model, b, "mean-pooled")
    assert torch.allclose(both.mlp, (18 * ma.mlp + 18 * mb.mlp) / 36, atol=1e-6)  # 3 × 6 and 2 × 9 positions
    with pytest.raises(BenchError, match="one length"):
        collect_means(model, [a, b], "mean")


class HandScorer(BatchedScorer):
    """Per-prompt KLs by hand: a removed component costs cost[c][bin] on each prompt of that bin."""

    def __init__(self, cost: dict, bins: list[int], batch_size: int | None = None):
        self.cost = cost
        super().__init__(torch.zeros(len(bins), 1, dtype=torch.long), batch_size, bins=bins)

    def build(self, ids):
        return None

    def batch_rows(self, removed, i, ids):
        return torch.tensor([sum(self.cost[c][b] for c in removed) for b in self.bins[i].tolist()],
                            dtype=torch.float64)


def test_the_per_template_rule_by_hand():
    """Two templates, two prompts each. L1.H0 costs template 0 little and template 1 much: the mean rule removes
    it (mean rise 0.03 < 0.04), the per-template rule keeps it (template 1 rises 0.05). L1.H1 is cheap for both."""
    cost = {Component(1, 0): (0.01, 0.05), Component(1, 1): (0.01, 0.02), Component(0, 0): (0.0, 0.0),
            Component(0, 1): (0.3, 0.0)}
    order = candidate_order(2, 2, False)
    for batch in (None, 1, 3):
        mean = Search(HandScorer(cost, [0, 1, 0, 1], batch), order, alpha=0.04)
        per = Search(HandScorer(cost, [0, 1, 0, 1], batch), order, alpha=0.04, rule="bins")
        assert mean.run() == {Component(1, 0), Component(1, 1), Component(0, 0)}
        assert per.run() == {Component(1, 1), Component(0, 0)}
        kept = per.steps[0]  # L1.H0 under the per-template rule
        assert (kept.removed, kept.worst_bin) == (False, 1) and kept.delta == pytest.approx(0.05)
        assert kept.kl == pytest.approx(0.03)  # the step's kl stays the mean over every prompt
        assert per.steps[3].worst_bin == 0 and not per.steps[3].removed  # L0.H1: template 0 rises 0.3
    with pytest.raises(ValueError, match="unknown rule"):
        Search(HandScorer(cost, [0, 1]), order, alpha=0.04, rule="max")
