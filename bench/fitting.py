"""Fitted ablation constants: after Algorithm 1 has chosen what to remove, the constants that replace the removed
heads and MLPs are trained to bring the ablated model's answer distribution back to the full model's.

The circuit (which components stay) does not change, and neither does any kept weight: only the removed
components' replacement values move, from the patching means they start at to the values that minimise

    KL( full(x) ‖ ablated(x; constants) )  at each answer position, mean over fresh prompts x

of the training templates (a seeded `TaskStream` that excludes every evaluation prompt), by Adam. The answer
positions are the last prompt position and, for answers of several tokens (greater-than's two digits on a
tokenizer that splits digits), the positions of the full model's own greedy answer tokens: the task scores every
token. This is optimal ablation (Li & Janson, "Optimal ablation for interpretability", NeurIPS 2024): a mean is
one constant among many, and on a template distribution a component's mean is a poor stand-in for what the rest
of the model expects from it.
The result is a `Means` like any other, so surgery, the hook path and every invariant treat it the same way.
Shapes: N prompts, T positions, V vocabulary.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from bench import progress
from bench.distill_data import TaskStream, eval_prompts
from bench.distillation import kl_mean, progress_bar
from models.ablation import Means, ablated
from models.generate import greedy, hf_last_logits
from models.types import Component
from tasks.base import Task
from tasks.data import TaskDataModule


@dataclass(frozen=True)
class FitOptions:
    """How the constants are fitted: `steps` Adam steps (0: keep the patching means) at `lr`, `batch_size` fresh
    prompts per step."""

    steps: int
    lr: float
    batch_size: int


class ConstantsFit(L.LightningModule):
    """Trains only the replacement constants of `removed`; the model's own weights are frozen and unchanged."""

    def __init__(self, model: nn.Module, removed: frozenset[Component], means: Means, lr: float, n_new: int) -> None:
        super().__init__()
        self.model, self.removed, self.scheme, self.min_len, self.lr = model, removed, means.scheme, means.min_len, lr
        self.n_new = n_new  # answer tokens: each one's position is fitted, as the task scores each one
        self.z = nn.Parameter(means.z.detach().clone())  # (L, P, nh, hd)
        self.mlp = nn.Parameter(means.mlp.detach().clone())  # (L, P, d)

    def train(self, mode: bool = True) -> "ConstantsFit":
        super().train(mode)
        self.model.eval()  # the frozen model never trains: no dropout in its forward
        return self

    def means(self) -> Means:
        return Means(self.z, self.mlp, self.scheme, self.min_len)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, k = batch["input_ids"], self.n_new  # (N, T)
        if k > 1:  # the full model's own answer, so that its later tokens are fitted where it makes them
            ids = torch.cat([ids, greedy(hf_last_logits(self.model), ids, k - 1).clone()], dim=1)  # (N, T + k - 1)
        with torch.no_grad():
            full = self.model(ids, logits_to_keep=k).logits  # (N, k, V)
        with ablated(self.model, self.removed, self.means()):
            cut = self.model(ids, logits_to_keep=k).logits  # (N, k, V)
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
    info = {"steps": options.steps, "lr": options.lr, "batch_size": options.batch_size, "wall_s": 0.0}
    if options.steps == 0 or not removed or means.scheme == "zero":
        return means, {**info, "steps": 0}
    device = next(model.parameters()).device
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    stream = TaskStream(task, tokenizer, seed, options.batch_size, eval_prompts(dm))
    module = ConstantsFit(model, removed, means, options.lr, task.n_new(tokenizer))
    accelerator, devices = lightning_device(device)
    trainer = L.Trainer(max_steps=options.steps, accelerator=accelerator, devices=devices, logger=logger or False,
                        callbacks=[progress_bar() if Console().is_terminal else FitLines()], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1)
    start = time.perf_counter()
    try:
        fit_or_interrupt(trainer, module, DataLoader(stream, batch_size=None))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    fitted = Means(module.z.detach().clone(), module.mlp.detach().clone(), means.scheme, means.min_len)
    return fitted, {**info, "wall_s": time.perf_counter() - start}
