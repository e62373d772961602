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

import random
import time
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from bench import progress
from bench.distill_data import TaskStream, eval_prompts
from bench.distillation import kl_mean, progress_bar
from models.ablation import Means
from models.surgery import prune, refill_constants
from models.types import Component
from tasks.base import Task, Tokenizer, bos_prefix, encode
from tasks.data import TaskDataModule


@dataclass(frozen=True)
class FitOptions:
    """How the constants are fitted: `steps` Adam steps (0: keep the patching means) at `lr`, `batch_size` fresh
    prompts per step, each step's prompts after 0..`jitter` filler sentences, and drawn from the training templates
    of every token length with `every_length` (both for position-free schemes only)."""

    steps: int
    lr: float
    batch_size: int
    jitter: int = 0
    every_length: bool = False


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


@torch.no_grad()
def teacher_answer(model: nn.Module, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts (N, T) extended by the full model's first k - 1 greedy answer tokens, and its logits at the k
    answer positions (N, k, V): one forward, then one cached step per extra token."""
    out = model(ids, use_cache=k > 1, logits_to_keep=1)
    logits = [out.logits[:, -1]]  # (N, V) each
    for _ in range(k - 1):
        nxt = logits[-1].argmax(-1, keepdim=True)  # (N, 1)
        ids = torch.cat([ids, nxt], dim=1)
        key = "cache" if "cache" in out else "past_key_values"  # transformers 5 renamed the KV cache
        out = model(nxt, use_cache=True, **{key: out[key]})
        logits.append(out.logits[:, -1])
    return ids, torch.stack(logits, dim=1)


class ConstantsFit(L.LightningModule):
    """Trains only the replacement constants of `removed`; the model's own weights are frozen and unchanged.

    The ablated model runs as the pruned model (its constants recomputed from the parameters in every step, so the
    gradient reaches them), which equals the hook-ablated model (tests: to 1e-4) at a fraction of the cost: only the
    kept components run forward and backward."""

    def __init__(self, model: nn.Module, removed: frozenset[Component], means: Means, lr: float, n_new: int) -> None:
        super().__init__()
        self.model, self.scheme, self.min_len, self.lr = model, means.scheme, means.min_len, lr
        self.pruned = prune(model, removed, means)
        self.n_new = n_new  # answer tokens: each one's position is fitted, as the task scores each one
        self.z = nn.Parameter(means.z.detach().clone())  # (L, P, nh, hd)
        self.mlp = nn.Parameter(means.mlp.detach().clone())  # (L, P, d)

    def train(self, mode: bool = True) -> "ConstantsFit":
        super().train(mode)
        self.model.eval()  # the frozen models never train: no dropout in their forwards
        self.pruned.eval()
        return self

    def means(self) -> Means:
        return Means(self.z, self.mlp, self.scheme, self.min_len)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        k = self.n_new
        ids, full = teacher_answer(self.model, batch["input_ids"], k)  # (N, T + k - 1), (N, k, V)
        cut = refill_constants(self.pruned, self.model, self.means()).last_logits(ids, k)  # (N, k, V)
        loss = kl_mean(full.flatten(0, 1), cut.flatten(0, 1))
        self.log("fit/kl", loss, prog_bar=True, batch_size=len(ids))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.z, self.mlp], lr=self.lr)


def fit_or_interrupt(trainer: L.Trainer, module: L.LightningModule, data: DataLoader) -> None:
    """`trainer.fit`; Lightning answers Ctrl-C with exit(1), and this raises KeyboardInterrupt instead, so the verb
    says what happened, with status 130."""
    try:
        trainer.fit(module, data)
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


def fit_means(model: nn.Module, task: Task, tokenizer, dm: TaskDataModule, removed: frozenset[Component],
              means: Means, options: FitOptions, seed: int, logger=None) -> tuple[Means, dict]:
    """The fitted constants of `removed` (a new `Means`; `means` is not changed) and what the fit did. With
    `options.steps == 0`, nothing removed or zero ablation (which has no constants: zero stays zero), `means`."""
    info = {"steps": 0, "lr": options.lr, "batch_size": options.batch_size, "jitter": 0, "lengths": [], "wall_s": 0.0}
    if options.steps == 0 or not removed or means.scheme == "zero":
        return means, info
    free = not means.positional  # per-position constants cover the search prompts' one length only
    jitter, every = (options.jitter, options.every_length) if free else (0, False)
    stream = TaskStream(task, tokenizer, seed, options.batch_size, eval_prompts(dm), every_length=every)
    info.update(steps=options.steps, jitter=jitter, lengths=stream.lengths)
    device = next(model.parameters()).device
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    n_new = task.n_new(tokenizer)
    module = ConstantsFit(model, removed, means, options.lr, n_new)
    room = module.pruned.cfg.n_positions - stream.lengths[-1] - (n_new - 1)  # what the context leaves
    data = Jittered(stream, tokenizer, jitter, seed, room) if jitter else stream
    accelerator, devices = lightning_device(device)
    trainer = L.Trainer(max_steps=options.steps, accelerator=accelerator, devices=devices, logger=logger or False,
                        callbacks=[progress_bar() if Console().is_terminal else FitLines()], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1)
    start = time.perf_counter()
    try:
        fit_or_interrupt(trainer, module, DataLoader(data, batch_size=None))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.to(device)  # Lightning's teardown moved the module, and the model inside it, to the CPU
    fitted = Means(module.z.detach().to(device).clone(), module.mlp.detach().to(device).clone(), means.scheme,
                   means.min_len)
    return fitted, {**info, "wall_s": time.perf_counter() - start}
