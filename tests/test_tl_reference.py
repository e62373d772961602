"""The TransformerLens reference path agrees with our HF-hook path: means, ablated logits, circuits."""
import random
import socket

import pytest
import torch

from models import arch
from models.ablation import collect_means, hooked_logits
from models.search import HookScorer, Search
from models.tl_reference import HOOK_MLP, HOOK_Z, TLScorer, boot_bridge, tl_logits, tl_means
from models.types import SCHEMES, Component, candidate_order
from tests.tiny import tiny_gpt2, tiny_ids, tiny_llama, tiny_mistral, tiny_neox, tiny_qwen2

MODELS = {"gpt2": tiny_gpt2, "llama-gqa": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral, "neox": tiny_neox}
# Hand-picked on these tiny models (seed 0; patching ids seed 1, validation ids seed 2) so that every scheme
# gives a mixed circuit: gpt2 removes 10/15 (mean) and 6/15 (zero); llama 8/21 and 10/21; qwen2 10, 11, 11 of 21
# (mean, mean-pooled, zero); mistral 8, 8, 10 of 21; neox 11 of 15 each. Every decision is >= 3e-4 from alpha.
ALPHA = {"gpt2": 0.03, "llama-gqa": 0.1, "qwen2": 0.1, "mistral": 0.1, "neox": 0.1}


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request):
    """(arch name, HF model, bridge booted on a copy of it)."""
    model = MODELS[request.param]()
    return request.param, model, boot_bridge(model)


def random_removed(model, seed: int) -> set[Component]:
    s = arch.shape_of(model)
    rng = random.Random(seed)
    return {c for c in candidate_order(s.n_layers, s.n_heads, True) if rng.random() < 0.5}


def test_boot_is_offline_and_leaves_the_model_alone(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("boot_bridge tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = tiny_llama()
    before = {n: type(m) for n, m in model.named_modules()}
    bridge = boot_bridge(model)
    assert {n: type(m) for n, m in model.named_modules()} == before
    ids = tiny_ids()
    assert torch.allclose(bridge(ids), model(ids).logits, atol=1e-5, rtol=0)


def test_hook_shapes_gqa_z_has_query_heads(pair):
    name, model, bridge = pair
    s = arch.shape_of(model)
    ids = tiny_ids(3, 7)
    _, cache = bridge.run_with_cache(ids, names_filter=[HOOK_Z.format(0), HOOK_MLP.format(0)])
    assert cache[HOOK_Z.format(0)].shape == (3, 7, s.n_heads, s.head_dim)  # 6 query heads for llama, not 2
    assert cache[HOOK_MLP.format(0)].shape == (3, 7, s.d_model)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_means_and_ablated_logits_match(pair, scheme):
    name, model, bridge = pair
    ids = tiny_ids(8, 10, seed=1)
    ours, theirs = collect_means(model, ids, scheme), tl_means(bridge, ids, scheme)
    assert torch.allclose(theirs.z, ours.z, atol=1e-5, rtol=0)
    assert torch.allclose(theirs.mlp, ours.mlp, atol=1e-5, rtol=0)
    val = tiny_ids(5, 10, seed=2)
    for seed in range(3):
        removed = random_removed(model, seed)
        ref = hooked_logits(model, val, removed, ours, last_only=False)
        assert torch.allclose(tl_logits(bridge, val, removed, theirs, last_only=False), ref, atol=1e-4, rtol=0)


def test_hooks_do_not_leak(pair):
    name, model, bridge = pair
    ids = tiny_ids()
    full = bridge(ids)
    means = tl_means(bridge, ids, "mean")
    ablated = tl_logits(bridge, ids, random_removed(model, 0), means, last_only=False)
    assert not torch.allclose(ablated, full, atol=1e-3)
    assert torch.equal(bridge(ids), full)
    assert all(not hp._forward_hooks for hp in bridge.hook_points())


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_circuits_match(pair, scheme):
    name, model, bridge = pair
    s = arch.shape_of(model)
    patch, val = tiny_ids(8, 10, seed=1), tiny_ids(6, 10, seed=2)
    order = candidate_order(s.n_layers, s.n_heads, include_mlps=True)
    hf = Search(HookScorer(model, val, collect_means(model, patch, scheme)), order, ALPHA[name])
    tl = Search(TLScorer(bridge, val, tl_means(bridge, patch, scheme)), order, ALPHA[name])
    assert tl.run() == hf.run()
    assert 0 < len(hf.removed) < len(order)  # a mixed circuit, so the comparison means something
    for a, b in zip(hf.steps, tl.steps):
        assert (a.component, a.removed) == (b.component, b.removed)
        assert abs(a.kl - b.kl) < 1e-5
