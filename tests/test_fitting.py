"""Fitted ablation constants: they lower the KL on prompts the fit never saw, change nothing but the constants, are
a pure function of the seed, and the pruned model built from them equals the hook-ablated model."""
import itertools

import pytest
import torch

from bench.core.metrics import kl_to
from bench.core.pipeline import patching_means
from bench.core.fitting import (MIN_GAIN, PATIENCE, AnswerPool, ConstantsFit, FitOptions, Jittered, Plateau, filler,
                           fit_means, pruned_teacher_answer, teacher_answer)
from bench.core.distill_data import TaskStream, eval_prompts
from bench.core.distillation import kl_mean
from models import loading
from models.ablation import Means, ablated, hooked_logits, no_means
from models.generate import greedy, hf_last_logits
from models.search import kl_last
from models.surgery import prune
from tasks import get_task
from tasks.base import bos_prefix
from tasks.data import TaskDataModule
from tests.test_surgery import random_removed
from tests.test_tasks import _BosTokenizer


@pytest.fixture(scope="module", params=["tiny_gpt2_dir", "tiny_llama_dir"])
def setting(request):
    model, tok = loading.load_model(str(request.getfixturevalue(request.param)))
    dm = TaskDataModule("ioi", tok, 8, 8, 24, seed=0, batch_size=8)
    dm.setup()
    return model, tok, get_task("ioi"), dm


def fitted(setting, scheme: str, steps: int = 40, seed: int = 0, jitter: int = 0, every_length: bool = False):
    model, tok, task, dm = setting
    means = patching_means(model, task, tok, dm, scheme, 8)
    removed = frozenset(random_removed(model, 1))
    options = FitOptions(steps, 3e-2, 16, jitter, every_length)
    out, info = fit_means(model, task, tok, dm, removed, means, options, seed)
    return means, removed, out, info


def ablated_fn(model, removed, means):
    return lambda ids: hooked_logits(model, ids, removed, means)


@pytest.mark.parametrize("scheme", ["mean-pooled", "mean"])
def test_fitting_lowers_the_kl_on_unseen_prompts_and_moves_only_the_constants(setting, scheme):
    model, tok, task, dm = setting
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    means, removed, out, info = fitted(setting, scheme)
    full = hf_last_logits(model)
    before = kl_to(full, ablated_fn(model, removed, means), dm.test)
    after = kl_to(full, ablated_fn(model, removed, out), dm.test)
    # a per-position mean is already close to the best constant on these tiny random models; a pooled one is not
    assert after < (0.8 if scheme == "mean-pooled" else 1.0) * before, (before, after)
    assert info["steps"] == 40 and info["wall_s"] > 0
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert not model.training
    assert not out.z.requires_grad and out.scheme == means.scheme and out.min_len == means.min_len
    again = patching_means(model, task, tok, dm, scheme, 8)
    assert torch.equal(means.z, again.z) and torch.equal(means.mlp, again.mlp)  # the input is not changed


def test_only_the_removed_components_constants_move(setting):
    model = setting[0]
    means, removed, out, _ = fitted(setting, "mean-pooled", steps=5)
    for l in range(model.config.num_hidden_layers):
        for h in range(model.config.num_attention_heads):
            moved = not torch.equal(out.z[l, :, h], means.z[l, :, h])
            assert moved == (any(c.layer == l and c.head == h for c in removed)), (l, h)
        assert (not torch.equal(out.mlp[l], means.mlp[l])) == any(c.layer == l and c.is_mlp for c in removed)


@pytest.mark.parametrize("scheme", ["mean-pooled", "mean"])
def test_the_pruned_model_of_fitted_constants_equals_the_hook_ablated_one(setting, scheme):
    model, _, _, dm = setting
    _, removed, out, info = fitted(setting, scheme, steps=10, jitter=3, every_length=True)
    assert info["jitter"] == (3 if scheme == "mean-pooled" else 0)  # per-position constants: the prompts' length
    t = dm.test.input_ids.shape[1]
    assert len(info["lengths"]) > 1 if scheme == "mean-pooled" else info["lengths"] == [t]
    pruned = prune(model, removed, out)
    lengths = (t,) if scheme == "mean" else (1, t - 3, t, t + 4)  # position-free: any length
    for n in lengths:
        ids = torch.randint(0, model.config.vocab_size, (3, n), generator=torch.Generator().manual_seed(n))
        with torch.no_grad(), ablated(model, removed, out):
            ref = model(ids).logits  # (N, T, V)
        assert torch.allclose(pruned(ids), ref, atol=1e-4, rtol=0)


def test_the_same_seed_gives_the_same_constants_and_zero_steps_the_means(setting):
    _, _, a, _ = fitted(setting, "mean-pooled", steps=4)
    _, _, b, _ = fitted(setting, "mean-pooled", steps=4)
    _, _, c, _ = fitted(setting, "mean-pooled", steps=4, seed=1)
    assert torch.equal(a.z, b.z) and torch.equal(a.mlp, b.mlp)
    assert not torch.equal(a.z, c.z)
    for scheme, steps in (("mean-pooled", 0), ("zero", 4)):  # zero ablation has no constants: zero stays zero
        means, _, same, info = fitted(setting, scheme, steps=steps)
        assert same is means and info["steps"] == 0


def test_the_fit_never_sees_an_evaluation_prompt(setting):
    _, tok, task, dm = setting
    exclude = eval_prompts(dm)
    assert {e.prompt for e in dm.heldout.examples} <= exclude and {e.prompt for e in dm.test.examples} <= exclude
    stream = TaskStream(task, tok, 0, 16, exclude)
    seen = {e.prompt for k in range(30) for e in stream.examples(k)}
    assert seen and not seen & exclude
    assert stream.spaces and not any(s.template.heldout for s in stream.spaces)


def test_the_fit_of_every_length_draws_one_length_a_step_and_each_in_proportion(setting):
    _, tok, task, dm = setting
    exclude = eval_prompts(dm)
    one, every = (TaskStream(task, tok, 0, 16, exclude, every_length=e) for e in (False, True))
    assert one.lengths == [dm.test.input_ids.shape[1]] and len(every.lengths) > 1
    assert every.spaces[:len(one.spaces)] == one.spaces and not any(s.template.heldout for s in every.spaces)
    n = len(every.spaces)
    shapes = [every.batch(k)["input_ids"].shape[1] for k in range(n)]  # a batch stacks: one length each
    assert sorted(shapes) == sorted(s.length for s in every.spaces)  # a length's steps: its templates' share
    assert not {e.prompt for k in range(2 * n) for e in every.examples(k)} & exclude


def grads_of_the_reference(model, ids, removed, means, k: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The fit's loss computed on the hook-ablated full model, and its gradient in the constants."""
    ref = Means(means.z.clone().requires_grad_(True), means.mlp.clone().requires_grad_(True), means.scheme,
                means.min_len)
    with torch.no_grad():
        full = model(ids).logits[:, -k:]  # (N, k, V)
    with ablated(model, removed, ref):  # hooked_logits runs in inference mode
        cut = model(ids).logits[:, -k:]  # (N, k, V)
    loss = kl_mean(full.flatten(0, 1), cut.flatten(0, 1))
    loss.backward()
    return float(loss), grad_of(ref.z), grad_of(ref.mlp)


def grad_of(p: torch.Tensor) -> torch.Tensor:
    """p's gradient; zeros where nothing removed used it."""
    return torch.zeros_like(p) if p.grad is None else p.grad


@pytest.mark.parametrize("scheme", ["mean-pooled", "mean"])
def test_a_fitting_step_through_the_pruned_model_equals_one_through_the_hooks(setting, scheme):
    """The fit runs the pruned model, the fast path: its loss and its gradient in the constants equal those of the
    hook-ablated full model, for every constant, removed or not."""
    model, tok, task, dm = setting
    means = patching_means(model, task, tok, dm, scheme, 8)
    removed = frozenset(random_removed(model, 3))
    module = ConstantsFit(model, removed, means, 1e-2, 1)
    ids = dm.test.input_ids  # (N, T)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here to log to
        loss = module.training_step({"input_ids": ids}, 0)
    loss.backward()
    ref_loss, z_grad, mlp_grad = grads_of_the_reference(model, ids, removed, means, 1)
    assert abs(float(loss) - ref_loss) < 1e-5 * max(1.0, ref_loss), (float(loss), ref_loss)
    for got, want in ((grad_of(module.z), z_grad), (grad_of(module.mlp), mlp_grad)):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6 * float(want.abs().max()))


def test_every_token_of_a_longer_answer_is_fitted(tiny_llama_dir):
    """greater-than answers in two digit tokens on SmolLM2's tokenizer: the fit's loss is the KL at both answer
    positions, the second at the full model's own first digit."""
    model, tok = loading.load_model(str(tiny_llama_dir))
    task = get_task("greater-than")
    assert task.n_new(tok) == 2
    dm = TaskDataModule(task, tok, 8, 8, 8, seed=0, batch_size=8)
    means = patching_means(model, task, tok, dm, "mean-pooled", 8)
    removed = frozenset(random_removed(model, 2))
    module = ConstantsFit(model, removed, means, 1e-2, task.n_new(tok))
    ids = dm.test.input_ids  # (N, T)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here to log to
        loss = module.training_step({"input_ids": ids}, 0)
    ext = torch.cat([ids, greedy(hf_last_logits(model), ids, 1)], dim=1)  # (N, T + 1)
    full = model(ext).logits[:, -2:]  # (N, 2, V)
    cut = hooked_logits(model, ext, removed, means, last_only=False)[:, -2:]
    expected = sum(kl_last(full[:, i], cut[:, i]) for i in range(2)) / 2
    assert abs(float(loss) - expected) < 1e-4, (float(loss), expected)
    loss.backward()  # and the gradient through the pruned model is the hook-ablated model's
    _, z_grad, mlp_grad = grads_of_the_reference(model, ext, removed, means, 2)
    assert z_grad.abs().max() > 0
    for got, want in ((grad_of(module.z), z_grad), (grad_of(module.mlp), mlp_grad)):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6 * float(want.abs().max()))


def test_the_filler_is_seeded_varied_and_fits_its_room(smollm2_tokenizer):
    tok = smollm2_tokenizer
    draws = [filler(tok, 3, 0, k, 1000) for k in range(60)]
    assert draws == [filler(tok, 3, 0, k, 1000) for k in range(60)]
    assert draws != [filler(tok, 3, 1, k, 1000) for k in range(60)]
    assert {tok.decode(list(d)).count("\n") for d in draws} == {0, 1, 2, 3}  # 0..3 sentences, each on its line
    assert len({len(d) for d in draws}) > 5  # the prompts land at many offsets
    assert all(len(filler(tok, 3, 0, k, 12)) <= 12 for k in range(60))
    assert all(filler(tok, 0, 0, k, 1000) == () for k in range(10))


@pytest.mark.parametrize("with_bos", [False, True])
def test_jittered_batches_put_the_filler_after_the_bos(smollm2_tokenizer, with_bos):
    tok = _BosTokenizer(smollm2_tokenizer) if with_bos else smollm2_tokenizer
    stream = TaskStream(get_task("ioi"), tok, 0, 4, frozenset())
    b = len(bos_prefix(tok))
    assert b == int(with_bos)
    for k, (plain, jit) in zip(range(8), zip(stream, Jittered(stream, tok, 3, 0, 1000))):
        ids, pre = plain["input_ids"], torch.tensor(filler(tok, 3, 0, k, 1000), dtype=torch.long)
        expected = torch.cat([ids[:, :b], pre.expand(len(ids), -1), ids[:, b:]], dim=1)
        assert torch.equal(jit["input_ids"], expected) and torch.equal(jit["targets"], plain["targets"])


@pytest.mark.parametrize("k", [1, 3])
def test_the_teachers_cached_answer_equals_greedy_decoding_without_a_cache(setting, k):
    model, _, _, dm = setting
    ids = dm.test.input_ids  # (N, T)
    ext, logits = teacher_answer(model, ids, k)
    with torch.no_grad():
        assert torch.equal(ext, torch.cat([ids, greedy(hf_last_logits(model), ids, k - 1)], dim=1))
        torch.testing.assert_close(logits, model(ext).logits[:, -k:], atol=1e-4, rtol=0)


def pooled(setting, chunk: int | None = None, **options):
    """`fitted` on a pool of 4 batches with a plateau check every 3 steps; with `chunk`, the pool's teacher runs in
    chunks of that many prompts."""
    model, tok, task, dm = setting
    means = patching_means(model, task, tok, dm, "mean-pooled", 8)
    removed = frozenset(random_removed(model, 1))
    o = FitOptions(**{"steps": 12, "lr": 3e-2, "batch_size": 8, "jitter": 2, "pool": 4, "check_every": 3, **options})
    if chunk is None:
        return fit_means(model, task, tok, dm, removed, means, o, 0)
    build = AnswerPool.build
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AnswerPool, "build", classmethod(lambda cls, *a: build(*a[:-1], chunk)))
        return fit_means(model, task, tok, dm, removed, means, o, 0)


def test_a_pooled_fit_is_a_function_of_the_seed_and_not_of_the_teachers_batch_size(setting):
    (a, info), (b, _) = pooled(setting), pooled(setting)
    assert torch.equal(a.z, b.z) and torch.equal(a.mlp, b.mlp)
    assert info["pool"] == 4 and info["pool_s"] > 0 and [s for s, _ in info["val_kl"]][:2] == [3, 6]
    for chunk in (1, 8):  # the teacher run prompt by prompt, and on the whole batch at once
        c, _ = pooled(setting, chunk)
        torch.testing.assert_close(c.z, a.z, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(c.mlp, a.mlp, atol=1e-5, rtol=1e-4)


def test_a_pool_makes_seeded_passes_over_its_batches():
    batches = [{"input_ids": torch.full((2, 3), i)} for i in range(5)]
    pool = AnswerPool(batches, seed=0)
    seen = [int(pool.batch(j)["input_ids"][0, 0]) for j in range(15)]
    assert all(sorted(seen[p * 5:(p + 1) * 5]) == list(range(5)) for p in range(3))  # each pass: every batch once
    assert seen[:5] != seen[5:10] or seen[5:10] != seen[10:]  # passes are reshuffled
    assert seen == [int(b["input_ids"][0, 0]) for b in itertools.islice(AnswerPool(batches, 0), 15)]
    assert seen != [int(AnswerPool(batches, 1).batch(j)["input_ids"][0, 0]) for j in range(15)]


class _Trainer:
    """What `Plateau` reads and writes of a Trainer."""

    def __init__(self) -> None:
        self.global_step, self.should_stop, self.callback_metrics = 0, False, {}


def test_the_plateau_rule_stops_after_patience_checks_without_a_gain_and_keeps_the_best():
    module = torch.nn.Module()
    module.z, module.mlp = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    plateau, trainer = Plateau(), _Trainer()
    # 1.0, then 0.5 (a gain), then 0.498 (the best, but under MIN_GAIN of a gain), 0.6 and 0.55: three checks
    # without a gain; the fit stops there and keeps the constants of the 0.498 check
    for step, kl in enumerate([1.0, 0.5, 0.498, 0.6, 0.55], start=1):
        assert not trainer.should_stop
        trainer.global_step, trainer.callback_metrics = 10 * step, {"fit/val_kl": torch.tensor(kl)}
        module.z.data.fill_(step)
        plateau.on_validation_epoch_end(trainer, module)
    assert PATIENCE == 3 and 1 - 0.498 / 0.5 < MIN_GAIN  # 0.4% is under the gain that counts
    assert trainer.should_stop and float(plateau.best[0]) == 3 and plateau.best_kl == pytest.approx(0.498)
    assert [s for s, _ in plateau.history] == [10, 20, 30, 40, 50]
    assert [kl for _, kl in plateau.history] == pytest.approx([1.0, 0.5, 0.498, 0.6, 0.55])


def test_a_fit_that_plateaus_stops_before_its_last_step(setting):
    _, info = pooled(setting, steps=200, lr=1e-9, check_every=2)  # a learning rate that moves nothing: no gain
    assert info["steps"] == 2 * (PATIENCE + 1) and info["max_steps"] == 200


@pytest.mark.parametrize("k", [1, 3])
def test_the_pools_teacher_answers_as_the_model_does(setting, k):
    """The pool's teacher is the model as a PrunedModel with nothing removed, a shared prefix run once: the same
    greedy answer tokens as the model's own cached decoding, and its logits."""
    model, _, _, dm = setting
    ids = dm.test.input_ids.clone()  # (N, T)
    ids[:, :3] = ids[0, :3]  # a common prefix, as a filler makes
    want_ids, want = teacher_answer(model, ids, k)
    got_ids, got = pruned_teacher_answer(prune(model, (), no_means()), ids, k)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
