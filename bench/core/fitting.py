"""Fitted ablation constants: after Algorithm 1 has chosen what to remove, the constants that replace the removed
heads and MLPs are trained to bring the ablated model's answer distribution back to the full model's.

The circuit (which components stay) does not change, and neither does any kept weight: only the removed
components' replacement values move, from the patching means they start at to the values that minimise

    KL( full(x) ‖ ablated(x; constants) )  at each answer position, mean over fresh prompts x

of the training templates (a seeded `TaskStream` that excludes every evaluation prompt), by Adam. For a
position-free scheme, each step's prompts also come after up to `jitter` neutral filler sentences (`FILLERS`), and
with `every_length` from the training templates of every token length, not only the search's one: constants
fitted at the search templates' positions alone learn them (the pruned model then fails as soon as the names sit a
token later). The answer
positions are the last prompt position and, for answers of several tokens (greater-than's two digits on a
tokenizer that splits digits), the positions of the full model's own greedy answer tokens: the task scores every
token. This is optimal ablation (Li & Janson, "Optimal ablation for interpretability", NeurIPS 2024): a mean is
one constant among many, and on a template distribution a component's mean is a poor stand-in for what the rest
of the model expects from it.
The result is a `Means` like any other, so surgery, the hook path and every invariant treat it the same way.
Shapes: N prompts, T positions, V vocabulary.
"""
from __future__ import annotations

import itertools
import math
import random
import time
from typing import Callable, Iterable, Iterator
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from bench.core import progress
from bench.core.memory import require
from bench.core.distill_data import TaskStream, eval_prompts
from bench.core.distillation import kl_mean, progress_bar, teacher_answer
from models.ablation import Means, no_means
from models.macs import FIT_STEP, pruned_macs
from models.pruned import PrunedModel
from models.surgery import prune, pruned_config, refill_constants
from models.types import Component, scheme
from tasks.base import Task, Tokenizer, bos_prefix, encode
from tasks.data import TaskDataModule


@dataclass(frozen=True)
class FitOptions:
    """How the constants are fitted: at most `steps` Adam steps (0: keep the patching means) at `lr`, `batch_size`
    prompts per step, each step's prompts after 0..`jitter` filler sentences, and drawn from the training templates
    of every token length with `every_length` (both for position-free schemes only).

    `pool` > 0: the fit trains on `pool` batches whose teacher answers are computed once, in seeded passes; 0: on
    fresh prompts, the teacher run in every step. `check_every` > 0: every that many steps, the KL on `VAL_PROMPTS`
    prompts the fit never trains on; the fit stops once `PATIENCE` checks in a row have not lowered the best of them
    by `MIN_GAIN` (relative), and keeps the constants of the best check."""

    steps: int
    lr: float
    batch_size: int
    jitter: int = 0
    every_length: bool = False
    pool: int = 0
    check_every: int = 0


VAL_PROMPTS = 64  # prompts of the plateau check (whole batches: at least one)
PATIENCE = 3  # checks without a gain before the fit stops
MIN_GAIN = 0.01  # a relative fall of the best check's KL that counts as a gain


# Neutral sentences, without names or numbers: what may come before a prompt in the fit.
FILLERS = (
    "It was a quiet morning.", "The weather had been cold all week.", "Nobody said much at first.",
    "Everything was ready.", "The day had started early, as it often did.", "There was music in the background.",
    "It had rained the night before.", "Later that day, the streets were busy again.", "The news came as a surprise.",
    "It was the last week of the summer.", "The room was warm and bright.", "Not much had changed since then.",
)


def filler(tok: Tokenizer, most: int, seed: int, step: int, room: int) -> tuple[int, ...]:
    """Step `step`'s filler ids: 0..`most` of `FILLERS`, each on its own line, drawn from (seed, step); of those, as
    many as fit in `room` tokens."""
    rng = random.Random(f"fit-jitter/{seed}/{step}")
    ids: tuple[int, ...] = ()
    for sentence in rng.sample(FILLERS, rng.randint(0, min(most, len(FILLERS)))):
        more = tuple(encode(tok, sentence + "\n"))
        if len(ids) + len(more) > room:
            break
        ids += more
    return ids


class Jittered(IterableDataset):
    """`stream`'s batches, step k's prompts after `filler(tok, most, seed, k, room)` (behind the BOS where there is
    one)."""

    def __init__(self, stream: IterableDataset, tok: Tokenizer, most: int, seed: int, room: int) -> None:
        self.stream, self.tok, self.most, self.seed, self.room = stream, tok, most, seed, room
        self.bos = len(bos_prefix(tok))

    def __iter__(self):
        for k, batch in enumerate(self.stream):
            pre = filler(self.tok, self.most, self.seed, k, self.room)
            ids = batch["input_ids"]  # (N, T)
            pre = torch.tensor(pre, dtype=ids.dtype).expand(len(ids), -1)  # (N, F)
            yield {**batch, "input_ids": torch.cat([ids[:, :self.bos], pre, ids[:, self.bos:]], dim=1)}  # (N, F + T)


class AnswerPool(IterableDataset):
    """Batches of a (jittered) stream with the full model's answers computed once: each holds its prompts extended by
    the teacher's k - 1 greedy answer tokens ("input_ids", (N, T + k - 1)) and the teacher's logits at the k answer
    positions ("teacher", (N, k, V), on the CPU). Training makes passes over them, each in a seeded order, so step
    j's batch is a pure function of (seed, j)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], seed: int) -> None:
        self.batches, self.seed = batches, seed

    @classmethod
    def build(cls, data: Iterable, n: int, answer: Callable, seed: int, chunk: int) -> "AnswerPool":
        """The first `n` batches of `data`, `answer` (prompts -> (extended prompts, answer logits), as
        `teacher_answer`) run on them in chunks of at most `chunk` prompts (the answers do not depend on it)."""
        batches = []
        for b in itertools.islice(data, n):
            parts = [answer(c) for c in b["input_ids"].split(chunk)]
            batches.append({"input_ids": torch.cat([ids.cpu() for ids, _ in parts]),
                            "teacher": torch.cat([logits.cpu() for _, logits in parts])})
        return cls(batches, seed)

    def batch(self, j: int) -> dict[str, torch.Tensor]:
        p, i = divmod(j, len(self.batches))
        g = torch.Generator().manual_seed(random.Random(f"fit-pool/{self.seed}/{p}").getrandbits(63))
        return self.batches[int(torch.randperm(len(self.batches), generator=g)[i])]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (self.batch(j) for j in itertools.count())


@torch.no_grad()
def pruned_teacher_answer(full: PrunedModel, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`teacher_answer` on `full`, the model as a `PrunedModel` with nothing removed (its logits equal the model's;
    tests: 1e-5), the prompts' common prefix run once: k - 1 forwards for the greedy tokens, then one for the logits
    at the k answer positions."""
    for _ in range(k - 1):
        nxt = answer_logits(full, ids, 1)[:, -1].argmax(-1, keepdim=True)  # (N, 1)
        ids = torch.cat([ids, nxt], dim=1)
    return ids, answer_logits(full, ids, k)


def answer_logits(pruned: PrunedModel, ids: torch.Tensor, k: int, share: bool = True) -> torch.Tensor:
    """`pruned`'s logits at the last k positions of ids (N, T) -> (N, k, V); with `share`, the first positions that
    every prompt has alike run once."""
    p = min(common_prefix(ids), ids.shape[1] - k) if share else 0
    return pruned.shared_last_logits(ids, k, p) if p > 0 else pruned.last_logits(ids, k)


def answer_macs(cfg, ids: torch.Tensor, k: int, share: bool = True) -> int:
    """MACs of `answer_logits(pruned of cfg, ids, k, share)`: the shared prefix once, the rest per prompt."""
    n, t = ids.shape
    p = min(common_prefix(ids), t - k) if share else 0
    return pruned_macs(cfg, p + n * (t - p) if p > 0 else n * t, n * k)


def teacher_answer_macs(cfg, ids: torch.Tensor, k: int) -> int:
    """MACs of `pruned_teacher_answer` that ended with ids (N, T + k - 1): k - 1 greedy forwards, then the k answer
    positions' logits."""
    t = ids.shape[1] - (k - 1)
    return sum(answer_macs(cfg, ids[:, :t + j], 1) for j in range(k - 1)) + answer_macs(cfg, ids, k)


def common_prefix(ids: torch.Tensor) -> int:
    """How many first positions every row of ids (N, T) has alike."""
    return int((ids == ids[:1]).all(0).long().cumprod(0).sum())


def pool_bytes(batches: int, batch_size: int, k: int, vocab: int) -> int:
    """What a pool's teacher logits hold in memory: (batches × batch_size, k, V) floats."""
    return batches * batch_size * k * vocab * torch.get_default_dtype().itemsize


class ConstantsFit(L.LightningModule):
    """Trains only the replacement constants of `removed`; the model's own weights are frozen and unchanged.

    The ablated model runs as the pruned model (its constants recomputed from the parameters in every step, so the
    gradient reaches them), which equals the hook-ablated model (tests: to 1e-4) at a fraction of the cost: only the
    kept components run forward and backward, and the positions that every prompt of the batch starts with (the
    filler, the template's first words) run once, not once per prompt. A batch that carries "teacher" logits (an
    `AnswerPool`'s) runs no teacher forward."""

    def __init__(self, model: nn.Module, removed: frozenset[Component], means: Means, lr: float, n_new: int) -> None:
        super().__init__()
        self.model, self.scheme, self.min_len, self.lr = model, means.scheme, means.min_len, lr
        self.pruned = prune(model, removed, means)
        self.n_new = n_new  # answer tokens: each one's position is fitted, as the task scores each one
        self.share_prefix = True  # False: every prompt runs its whole length (the same loss, slower)
        self.macs = 0  # what the steps and checks ran so far (models/macs.py)
        self.full_cfg = pruned_config(model, (), no_means())  # the teacher's shape, for its MACs
        self.z = nn.Parameter(means.z.detach().clone())  # (L, P, nh, hd)
        self.mlp = nn.Parameter(means.mlp.detach().clone())  # (L, P, d)

    def train(self, mode: bool = True) -> "ConstantsFit":
        super().train(mode)
        self.model.eval()  # the frozen models never train: no dropout in their forwards
        self.pruned.eval()
        return self

    def means(self) -> Means:
        return Means(self.z, self.mlp, self.scheme, self.min_len)

    def kl(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL(full ‖ pruned) at the answer positions, mean over the batch's prompts and positions."""
        k = self.n_new
        if "teacher" in batch:
            ids, full = batch["input_ids"], batch["teacher"]  # (N, T + k - 1), (N, k, V)
        else:
            ids, full = teacher_answer(self.model, batch["input_ids"], k)
            self.macs += teacher_answer_macs(self.full_cfg, ids, k)
        cut = answer_logits(refill_constants(self.pruned, self.model, self.means()), ids, k, self.share_prefix)
        self.macs += answer_macs(self.pruned.cfg, ids, k, self.share_prefix) * (FIT_STEP if self.training else 1)
        return kl_mean(full.flatten(0, 1), cut.flatten(0, 1))  # cut: (N, k, V)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.kl(batch)
        self.log("fit/kl", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("fit/val_kl", self.kl(batch), batch_size=len(batch["input_ids"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.z, self.mlp], lr=self.lr)


class Plateau(Callback):
    """Stops the fit once `PATIENCE` checks in a row have not lowered the best validation KL by `MIN_GAIN`
    (relative), and keeps the constants of the best check (`best`) and every check's (step, KL) (`history`)."""

    def __init__(self) -> None:
        self.best, self.best_kl, self.waited, self.history = None, math.inf, 0, []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: ConstantsFit) -> None:
        kl = float(trainer.callback_metrics["fit/val_kl"])
        self.history.append((trainer.global_step, kl))
        if kl < self.best_kl:
            self.best = (pl_module.z.detach().clone(), pl_module.mlp.detach().clone())
        if kl < self.best_kl * (1 - MIN_GAIN):
            self.waited = 0
        else:
            self.waited += 1
            trainer.should_stop = self.waited >= PATIENCE
        self.best_kl = min(self.best_kl, kl)


def fit_or_interrupt(trainer: L.Trainer, module: L.LightningModule, data: DataLoader, val=None) -> None:
    """`trainer.fit`; Lightning answers Ctrl-C with exit(1), and this raises KeyboardInterrupt instead, so the verb
    says what happened, with status 130."""
    try:
        trainer.fit(module, data, val)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def lightning_device(device: torch.device) -> tuple[str, object]:
    """(accelerator, devices) of a Trainer that runs on `device` alone."""
    return {"cuda": ("gpu", [device.index or 0]), "mps": ("mps", 1)}.get(device.type, ("cpu", 1))


class FitLines(Callback):
    """Outside a terminal: a flushed line at every tenth of the steps, with the last logged KL."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total = trainer.global_step, trainer.max_steps
        if step == total or step % max(1, total // 10) == 0:
            progress.line(f"fitting the constants: step {step}/{total}, KL {float(outputs['loss']):.4f}")


def fit_data(module: ConstantsFit, task: Task, tokenizer, dm: TaskDataModule, options: FitOptions,
             seed: int) -> tuple[Iterable, list, dict]:
    """The fit's training data (a pool or the stream), its plateau-check batches (drawn as a second rank of the
    stream, so apart from the training draws) and what was built: lengths, jitter, the pool's size and seconds."""
    model, n_new, cfg = module.model, module.n_new, module.pruned.cfg
    free = not cfg.positional  # per-position constants cover the search prompts' one length only
    jitter, every = (options.jitter, options.every_length) if free else (0, False)
    stream = TaskStream(task, tokenizer, seed, options.batch_size, eval_prompts(dm), every_length=every)
    room = cfg.n_positions - stream.lengths[-1] - (n_new - 1)  # what the context leaves
    jittered = (lambda s: Jittered(s, tokenizer, jitter, seed, room)) if jitter else (lambda s: s)  # noqa: E731
    n_pool = min(options.pool, options.steps)  # batches that no step would reach are not built
    checks = 0 < options.check_every <= options.steps
    n_val = max(1, VAL_PROMPTS // options.batch_size) if checks else 0
    require(pool_bytes(n_pool + n_val, options.batch_size, n_new, cfg.vocab_size), torch.device("cpu"),
            f"--fit-pool {n_pool}", "its teacher logits", "lower --fit-pool or --fit-batch-size")
    start, chunk, device = time.perf_counter(), options.batch_size, next(model.parameters()).device
    full = prune(model, (), no_means()) if n_pool + n_val else None  # the teacher, as fast as a pruned forward
    answer = lambda ids: pruned_teacher_answer(full, ids.to(device), n_new)  # noqa: E731
    train = AnswerPool.build(jittered(stream), n_pool, answer, seed, chunk) if n_pool else jittered(stream)
    val = AnswerPool.build(jittered(stream.at(0, 1)), n_val, answer, seed, chunk).batches
    info = {"jitter": jitter, "lengths": stream.lengths, "pool": n_pool, "pool_s": time.perf_counter() - start,
            "pool_macs": sum(teacher_answer_macs(full.cfg, b["input_ids"], n_new)
                             for b in (train.batches if n_pool else []) + val)}
    return train, val, info


def fit_means(model: nn.Module, task: Task, tokenizer, dm: TaskDataModule, removed: frozenset[Component],
              means: Means, options: FitOptions, seed: int, logger=None) -> tuple[Means, dict]:
    """The fitted constants of `removed` (a new `Means`; `means` is not changed) and what the fit did. With
    `options.steps == 0`, nothing removed or zero ablation (which has no constants: zero stays zero), `means`."""
    info = {"steps": 0, "max_steps": options.steps, "lr": options.lr, "batch_size": options.batch_size, "jitter": 0,
            "lengths": [], "pool": 0, "check_every": options.check_every, "macs": 0, "wall_s": 0.0}
    if options.steps == 0 or not removed or not scheme(means.scheme).constants:
        return means, info
    device, start = next(model.parameters()).device, time.perf_counter()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    module, plateau = ConstantsFit(model, removed, means, options.lr, task.n_new(tokenizer)), Plateau()
    try:
        train, val, built = fit_data(module, task, tokenizer, dm, options, seed)
        trainer = fit_trainer(device, options, logger, plateau)
        fit_or_interrupt(trainer, module, DataLoader(train, batch_size=None),
                         DataLoader(val, batch_size=None) if val else None)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.to(device)  # Lightning's teardown moved the module, and the model inside it, to the CPU
    z, mlp = plateau.best or (module.z.detach(), module.mlp.detach())
    fitted = Means(z.to(device).clone(), mlp.to(device).clone(), means.scheme, means.min_len)
    return fitted, {**info, **built, "steps": trainer.global_step, "val_kl": plateau.history,
                    "best_val_kl": plateau.best_kl if plateau.history else None,
                    "macs": built["pool_macs"] + module.macs, "wall_s": time.perf_counter() - start}


def fit_trainer(device: torch.device, options: FitOptions, logger, plateau: Plateau) -> L.Trainer:
    """At most `options.steps` steps, a plateau check every `options.check_every` (none at 0)."""
    accelerator, devices = lightning_device(device)
    check = options.check_every if 0 < options.check_every <= options.steps else None
    return L.Trainer(max_steps=options.steps, accelerator=accelerator, devices=devices, logger=logger or False,
                     callbacks=[progress_bar() if Console().is_terminal else FitLines(), plateau],
                     enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                     log_every_n_steps=1, val_check_interval=check, check_val_every_n_epoch=None,
                     limit_val_batches=1.0 if check else 0, num_sanity_val_steps=0)
