"""The central invariant: a pruned model's logits equal the hook-ablated full model's."""
import random
from functools import partial

import pytest
import torch

from models.ablation import collect_means, hooked_logits
from models.io import load_pruned, save_pruned
from models.pruned import count_params, count_params_of, last_attention
from models.surgery import prune
from models.types import SCHEMES, BenchError, Component, Scheme
from tests.tiny import tiny_gemma3, tiny_gpt2, tiny_ids, tiny_llama, tiny_mistral, tiny_neox, tiny_qwen2

MODELS = {"gpt2": tiny_gpt2, "llama-gqa": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral,
          "neox": tiny_neox, "neox-sequential": partial(tiny_neox, parallel=False), "gemma3": tiny_gemma3}


def random_removed(model, seed: int) -> set[Component]:
    """A random circuit that always includes a layer with no heads and a layer with every head."""
    rng = random.Random(seed)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    removed = {Component(l, h) for l in range(n_layers) for h in range(n_heads) if rng.random() < 0.5}
    removed |= {Component(l) for l in range(n_layers) if rng.random() < 0.5}
    removed |= {Component(seed % n_layers, h) for h in range(n_heads)}  # an emptied attention block
    removed -= {Component((seed + 1) % n_layers, h) for h in range(n_heads)}  # an untouched one
    return removed


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("seed", range(4))
def test_pruned_equals_hook_ablated(arch, scheme, seed):
    model = MODELS[arch](seed)
    means = collect_means(model, tiny_ids(8, 10, seed=100 + seed), scheme)
    removed = random_removed(model, seed)
    ids = tiny_ids(5, 10, seed=seed)
    ref = hooked_logits(model, ids, removed, means, last_only=False)
    pruned = prune(model, removed, means)
    assert torch.allclose(pruned(ids), ref, atol=1e-4, rtol=0)
    assert torch.allclose(pruned(ids, last_only=True), ref[:, -1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("positional", [True, False])
def test_a_scheme_is_one_registry_entry(monkeypatch, tmp_path, positional):
    """A scheme registered in models.types.SCHEMES alone is collected, pruned, saved and reloaded like the others:
    nothing else names schemes."""
    monkeypatch.setitem(SCHEMES, "new", Scheme("new", "a test scheme", positional, True))
    model = tiny_llama(1)
    means = collect_means(model, tiny_ids(8, 10, seed=101), "new")
    assert means.positional is positional and means.z.shape[1] == (10 if positional else 1)
    removed = random_removed(model, 1)
    ids = tiny_ids(5, 10, seed=1)
    pruned = prune(model, removed, means)
    assert torch.allclose(pruned(ids), hooked_logits(model, ids, removed, means, last_only=False), atol=1e-4, rtol=0)
    save_pruned(pruned, tmp_path / "m")
    again, _ = load_pruned(tmp_path / "m")
    assert again.cfg.scheme == "new" and torch.equal(again(ids), pruned(ids))


@pytest.mark.parametrize("arch", MODELS)
def test_unpruned_matches_hf(arch):
    model = MODELS[arch]()
    ids = tiny_ids()
    pruned = prune(model, set(), collect_means(model, ids, "mean"))
    assert torch.allclose(pruned(ids), model(ids).logits, atol=1e-5, rtol=0)


def test_everything_removed_is_a_constant_model():
    model = tiny_llama()
    n_layers, n_heads = 3, 6
    removed = {Component(l, h) for l in range(n_layers) for h in range(n_heads)} | {Component(l) for l in range(3)}
    means = collect_means(model, tiny_ids(seed=3), "mean")
    pruned = prune(model, removed, means)
    assert all(b.attn is None and b.mlp is None and b.ln1 is None for b in pruned.blocks)
    ids = tiny_ids()
    ref = hooked_logits(model, ids, removed, means, last_only=False)
    assert torch.allclose(pruned(ids), ref, atol=1e-4)
    assert torch.allclose(pruned(ids, last_only=True), ref[:, -1], atol=1e-4)  # no attention: last position only


@pytest.mark.parametrize("arch", MODELS)
def test_last_only_carries_one_position_after_the_last_attention(arch):
    model = MODELS[arch]()
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    removed = {Component(l, h) for l in range(1, n_layers) for h in range(n_heads)}  # heads left in layer 0 only
    means = collect_means(model, tiny_ids(seed=3), "mean")
    pruned = prune(model, removed, means)
    assert last_attention(pruned.blocks) == 0
    ids = tiny_ids()
    ref = hooked_logits(model, ids, removed, means)
    assert torch.allclose(pruned(ids, last_only=True), ref, atol=1e-4, rtol=0)


def test_gqa_kv_head_goes_only_with_its_whole_group():
    model = tiny_llama(n_head=6, n_kv=2)  # groups: heads 0-2 -> kv 0, heads 3-5 -> kv 1
    means = collect_means(model, tiny_ids(), "mean")
    keep_one = prune(model, {Component(0, h) for h in (0, 1, 3, 4)}, means)
    assert keep_one.blocks[0].attn.nkv == 2 and keep_one.blocks[0].attn.nq == 2
    drop_group = prune(model, {Component(0, h) for h in (0, 1, 2, 4)}, means)
    attn = drop_group.blocks[0].attn
    assert attn.nkv == 1 and attn.nq == 2 and attn.k.weight.shape == (8, 48)


def test_parameter_count_shrinks_by_the_removed_slices():
    model = tiny_gpt2()
    means = collect_means(model, tiny_ids(), "zero")
    full = count_params(prune(model, set(), means))["weights"]
    one_head = count_params(prune(model, {Component(0, 0)}, means))["weights"]
    d, hd = 32, 8
    assert full - one_head == 3 * (d * hd + hd) + hd * d  # Q, K, V rows with biases, and O columns


@pytest.mark.parametrize("arch", MODELS)
def test_save_and_load_gives_identical_logits(arch, tmp_path):
    model = MODELS[arch]()
    means = collect_means(model, tiny_ids(), "mean")
    pruned = prune(model, random_removed(model, 1), means)
    save_pruned(pruned, tmp_path, circuit={"task": "x"})
    again, manifest = load_pruned(tmp_path)
    ids = tiny_ids(seed=5)
    assert torch.equal(again(ids), pruned(ids))
    assert manifest["circuit"] == {"task": "x"}


def test_corrupt_manifest_is_one_clear_error(tmp_path):
    model = tiny_gpt2()
    save_pruned(prune(model, set(), collect_means(model, tiny_ids(), "zero")), tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BenchError, match="corrupt"):
        load_pruned(tmp_path)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_counting_from_config_matches_the_built_model(arch, scheme):
    model = MODELS[arch]()
    means = collect_means(model, tiny_ids(), scheme)
    for seed in range(3):
        pruned = prune(model, random_removed(model, seed), means)
        assert count_params_of(pruned.cfg) == count_params(pruned)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", ["mean-pooled", "zero"])
def test_position_free_model_takes_any_length(arch, scheme):
    """One constant per component: prompts shorter and longer than the patching prompts give the hook-ablated
    logits too."""
    model = MODELS[arch](5)
    means = collect_means(model, tiny_ids(8, 10, seed=11), scheme)
    removed = random_removed(model, 5)
    pruned = prune(model, removed, means)
    for t in (1, 4, 10, 17):
        ids = tiny_ids(3, t, seed=t)
        ref = hooked_logits(model, ids, removed, means, last_only=False)
        assert torch.allclose(pruned(ids), ref, atol=1e-4, rtol=0)
        assert torch.allclose(pruned(ids, last_only=True), ref[:, -1], atol=1e-4, rtol=0)


def test_pooled_mean_is_the_mean_over_prompts_and_positions():
    model = tiny_llama(3)
    ids = tiny_ids(8, 10, seed=12)
    per_position, pooled = collect_means(model, ids, "mean"), collect_means(model, ids, "mean-pooled")
    assert pooled.z.shape[1] == pooled.mlp.shape[1] == 1
    assert torch.allclose(pooled.z[:, 0], per_position.z.mean(1), atol=1e-6)
    assert torch.allclose(pooled.mlp[:, 0], per_position.mlp.mean(1), atol=1e-6)


@pytest.mark.parametrize("arch", MODELS)
def test_per_position_model_refuses_other_lengths(arch, tmp_path):
    """Per-position constants cover the prompts' length up to the answer tokens the means were taken over; any
    other length is one clear error, from the pruned model and from the hooks alike."""
    model = MODELS[arch](6)
    means = collect_means(model, tiny_ids(8, 11, seed=13), "mean", min_len=10)  # 10-token prompts + 1 answer
    removed = random_removed(model, 6)
    pruned = prune(model, removed, means)
    for t in (10, 11):
        ids = tiny_ids(3, t, seed=t)
        assert torch.allclose(pruned(ids), hooked_logits(model, ids, removed, means, last_only=False), atol=1e-4)
    for t in (4, 9, 12):
        with pytest.raises(BenchError, match=f"10 to 11-token inputs and cannot take a {t}-token input"):
            pruned(tiny_ids(2, t))
        with pytest.raises(BenchError, match="--ablation mean-pooled"):
            hooked_logits(model, tiny_ids(2, t), removed, means)
    save_pruned(pruned, tmp_path)
    reloaded, _ = load_pruned(tmp_path)
    assert (reloaded.cfg.min_positions, reloaded.cfg.n_positions) == (10, 11)
    with pytest.raises(BenchError, match="cannot take a 9-token input"):
        reloaded(tiny_ids(2, 9))


@pytest.mark.parametrize("arch", ["gpt2", "llama-gqa"])
def test_manifests_from_before_the_family_flags_still_load(arch, tmp_path):
    """Runs saved with PrunedConfig.arch ("gpt2" | "llama") instead of family/norm/mlp load to the same model."""
    import json

    model = MODELS[arch](0)
    pruned = prune(model, random_removed(model, 2), collect_means(model, tiny_ids(), "mean-pooled"))
    save_pruned(pruned, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("family", "norm", "mlp"):
        del manifest["config"][key]
    manifest["config"]["arch"] = "gpt2" if arch == "gpt2" else "llama"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    loaded, _ = load_pruned(tmp_path)
    assert loaded.cfg == pruned.cfg
    ids = tiny_ids(3, 10, seed=9)
    assert torch.equal(loaded(ids), pruned(ids))


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_shared_prefix_run_once_gives_the_logits_and_gradients_of_the_whole_batch(arch, scheme):
    """The fit's fast path: rows that share their first p tokens run the prefix once; the answer logits, and their
    gradient in the constants, are those of the plain forward."""
    model = MODELS[arch](1)
    means = collect_means(model, tiny_ids(8, 10, seed=101), scheme)
    top = model.config.num_hidden_layers - 1  # with the top block's heads gone too, its MLP runs on k positions
    for removed in (random_removed(model, 1), random_removed(model, 1) | set(Component(top, h) for h in range(
            model.config.num_attention_heads))):
        shared_prefix_matches(prune(model, removed, means))


def shared_prefix_matches(pruned) -> None:
    ids = tiny_ids(5, 10, seed=1)
    ids[:, :4] = ids[0, :4]  # a common prefix of 4 tokens
    for k, p in ((1, 4), (2, 4), (1, 1), (3, 2)):
        want = pruned.last_logits(ids, k)  # (B, k, V)
        torch.testing.assert_close(want, pruned(ids)[:, -k:], atol=1e-5, rtol=0)
        got = pruned.shared_last_logits(ids, k, p)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    consts = [b for b in pruned.buffers() if b.dtype.is_floating_point and b.ndim == 2 and b.shape[-1] > 1]
    if not consts:
        return
    for c in consts:
        c.requires_grad_(True)
    grads = [torch.autograd.grad(fn().square().sum(), consts) for fn in
             (lambda: pruned.last_logits(ids, 2), lambda: pruned.shared_last_logits(ids, 2, 4))]
    for want, got in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", MODELS)
def test_the_kv_cache_gives_the_plain_forward(arch):
    """Logits of a prompt taken in three pieces through the KV cache equal one plain forward's, at every position."""
    model = MODELS[arch](1)
    pruned = prune(model, random_removed(model, 1), collect_means(model, tiny_ids(8, 10, seed=3), "mean-pooled"))
    ids = tiny_ids(3, 12, seed=5)
    a, cache = pruned.cached(ids[:, :7])
    b, cache = pruned.cached(ids[:, 7:8], cache)
    c, cache = pruned.cached(ids[:, 8:], cache)
    assert cache.length == 12
    assert torch.allclose(torch.cat([a, b, c], dim=1), pruned(ids), atol=1e-5, rtol=0)
    from models.generate import cached_greedy, greedy

    with torch.inference_mode():
        assert torch.equal(cached_greedy(pruned, ids, 6), greedy(lambda x: pruned(x, last_only=True), ids, 6))
