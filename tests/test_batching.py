"""Memory bounded by the batch: the same means, KLs and circuit at any batch size and cache budget (the CLI side,
and the up-front refusal of a batch that cannot fit, are in test_cli)."""
import pytest
import torch

from bench.core.metrics import accuracy, kl_to
from models.ablation import collect_means
from models.fast import FastScorer
from models.search import BatchCache, HookScorer, Search, nbytes
from models.types import SCHEMES, candidate_order
from tasks import get_task
from tests.test_surgery import MODELS
from tests.tiny import tiny_ids

SCORERS = {"fast": FastScorer, "reference": HookScorer}
ALPHA = {"qwen2": 0.1, "neox": 0.05, "neox-sequential": 0.1}  # else 0.02: each tiny model's circuit is mixed (seed 4)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_means_do_not_depend_on_the_batch_size(arch, scheme):
    """To fp32 rounding: a forward's own outputs differ in the last bits between batch shapes (BLAS blocking)."""
    model, ids = MODELS[arch](3), tiny_ids(9, 10, seed=21)
    whole = collect_means(model, ids, scheme)
    for batch in (1, 4):
        part = collect_means(model, ids, scheme, batch_size=batch)
        torch.testing.assert_close(part.z, whole.z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(part.mlp, whole.mlp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("engine", SCORERS)
def test_same_circuit_at_any_batch_size_and_cache(arch, engine):
    """What is asserted: the same circuit, and every step's KL equal to 1e-6 relative. Only fp32 rounding differs
    (a forward's outputs change in the last bits with the batch shape); the batch sums are added in float64."""
    model = MODELS[arch](4)
    means = collect_means(model, tiny_ids(8, 10, seed=22), "mean-pooled")
    ids = tiny_ids(9, 10, seed=23)
    order = candidate_order(model.config.num_hidden_layers, model.config.num_attention_heads, True)
    one = nbytes(SCORERS[engine](model, ids, means).build(ids[:4]))  # what one batch of 4 keeps
    runs = {}
    for batch, cache in ((None, float("inf")), (4, float("inf")), (2, 0), (4, one)):
        search = Search(SCORERS[engine](model, ids, means, batch, cache), order, alpha=ALPHA.get(arch, 0.02))
        search.run()
        runs[batch, cache] = search
    first = runs[None, float("inf")]
    assert 0 < len(first.removed) < len(order)  # a mixed circuit, so the comparison bites
    for key, search in runs.items():
        assert search.removed == first.removed, key
        assert [s.kl for s in search.steps] == pytest.approx([s.kl for s in first.steps], rel=1e-6, abs=1e-9), key
    assert runs[2, 0].scorer.cache.used == 0 and runs[2, 0].scorer.cache.rebuilt > 0  # nothing kept: recomputed
    partly = runs[4, one].scorer.cache  # batches of 4, 4 and 1: room for the first only
    assert list(partly.kept) == [0] and partly.used == one and partly.rebuilt > 0


def test_batch_cache_refuses_a_changed_batch():
    cache = BatchCache(lambda ids: ids * 2, budget=float("inf"))
    ids = torch.arange(6).view(2, 3)
    assert torch.equal(cache.get(0, ids), ids * 2) and torch.equal(cache.get(0, ids.clone()), ids * 2)
    with pytest.raises(RuntimeError, match="batch 0 changed"):
        cache.get(0, ids + 1)


def test_evaluation_does_not_depend_on_the_batch_size(smollm2_tokenizer):
    from tasks.data import make_splits

    task, tok = get_task("ioi"), smollm2_tokenizer
    split = make_splits(task, tok, 1, 1, 9, seed=3)["test"]
    vocab = len(tok)

    def copy_token(k: int):  # logits that answer with the prompt's token at position k
        return lambda ids: 5.0 * torch.nn.functional.one_hot(ids[:, k], vocab).float()  # (N, V)

    scores = []
    for k in range(split.input_ids.shape[1]):
        fn = copy_token(k)
        scores.append(accuracy(task, tok, fn, split, 100))
        assert accuracy(task, tok, fn, split, 2) == scores[-1]
        assert kl_to(copy_token(-1), fn, split, 4) == pytest.approx(kl_to(copy_token(-1), fn, split, 100), rel=1e-12)
    assert max(scores) > 0  # some position holds the answer, so the accuracies compared are not all zero
