"""Circuit extraction as a LightningModule: one epoch per step of Algorithm 1.

The training batches are the validation prompts, fed in batches by the task's DataModule. Each step adds its
batch's KL (full model || candidate ablated on top of what is removed) to the epoch's sum; at the end of the epoch
the candidate is decided. With speculation (`Search.speculate` > 1) an epoch scores several states of one layer
and decides up to the first candidate kept. Memory is bounded by the batch (and the scorer's cache budget), not
by the prompts.
"""
from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from bench.core import progress
from models.pruned import PrunedConfig, count_params_of
from models.search import BatchedScorer, Search, Step
from models.types import Component


class ExtractionModule(L.LightningModule):
    """Drives a `Search` whose scorer is a `BatchedScorer`; logs each decision through the Lightning logger.

    It holds no trainable parameters and never optimises: the Trainer is the loop, the device and the logger.
    `base_cfg` is the unpruned PrunedConfig, used to count the parameters left after every decision.
    """

    def __init__(self, search: Search, base_cfg: PrunedConfig):
        super().__init__()
        if not isinstance(search.scorer, BatchedScorer):
            raise TypeError("ExtractionModule needs a BatchedScorer (FastScorer or HookScorer)")
        self.search, self.base_cfg = search, base_cfg
        self.automatic_optimization = False
        self.params = self.remaining_params()
        self._states: list = []
        self._kls: list[float] = []
        self._n = 0

    def remaining_params(self) -> int:
        removed, cfg = self.search.removed, self.base_cfg
        heads = [[h for h in hs if Component(l, h) not in removed] for l, hs in enumerate(cfg.heads)]
        mlps = [keep and Component(l) not in removed for l, keep in enumerate(cfg.mlps)]
        pruned = PrunedConfig.from_dict({**cfg.to_dict(), "heads": heads, "mlps": mlps})
        return count_params_of(pruned)["non_embedding"]

    def on_train_epoch_start(self) -> None:
        self._states = self.search.states()
        self._kls, self._n = [0.0] * len(self._states), 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        ids, scorer = batch["input_ids"], self.search.scorer  # (B, T)
        sums = scorer.bin_sums if self.search.rule == "bins" else scorer.batch_kls  # per bin, or in all
        kls = sums(self._states, batch_idx, ids)
        self._kls = [a + k for a, k in zip(self._kls, kls)]
        self._n += ids.shape[0]

    def on_train_epoch_end(self) -> None:
        counts = self.search.scorer.counts.clamp(min=1)
        kls = [kl / (counts if self.search.rule == "bins" else self._n) for kl in self._kls]
        for step in self.search.decide_all(self._states, kls):
            self.params = self.remaining_params()
            if self.logger is not None:
                self.logger.log_metrics(self.metrics(step), step=step.index)
        if self.search.done:  # speculation decides several candidates an epoch: fewer epochs than candidates
            self.trainer.should_stop = True

    def metrics(self, step: Step) -> dict[str, float]:
        c = step.component
        return {"search/kl": self.search.kl, "search/candidate_kl": step.kl, "search/delta_kl": step.delta,
                "search/kept": float(not step.removed), "search/removed": len(self.search.removed),
                "search/non_embedding_params": self.params, "search/candidate_layer": c.layer,
                "search/candidate_head": -1 if c.is_mlp else c.head}

    def configure_optimizers(self) -> None:
        return None


HEARTBEAT_S = 60.0  # without a terminal, how often a long candidate says which batch it is at


class SearchProgress(Callback):
    """A live display: 'candidate i/N L12.H3' with a bar of the candidates (and one of the batches when there are
    several), with a line under it for the kept state: its KL, what is removed and the parameters left. Where
    stdout is no terminal (a log file, CI), one plain line per decision instead, and the batch once a minute."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live: Live | None = None
        self.logged, self.beat = 0, time.monotonic()

    def on_train_start(self, trainer: L.Trainer, module: ExtractionModule) -> None:
        self.progress, self.state = progress.bar(), Text()
        self.candidates = self.progress.add_task("candidates", total=len(module.search.order))
        n_batches = int(trainer.num_training_batches)
        self.batches = self.progress.add_task("  batches", total=n_batches, visible=n_batches > 1)
        if self.console.is_terminal:
            self.live = progress.live(self.progress, self.state, self.console)

    def on_train_epoch_start(self, trainer: L.Trainer, module: ExtractionModule) -> None:
        s = module.search
        where = f"candidate {len(s.steps) + 1}/{len(s.order)} {s.candidate}"
        self.progress.update(self.candidates, completed=len(s.steps), description=where)
        self.progress.reset(self.batches)
        self._show(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.progress.advance(self.batches)
        s, n = module.search, int(trainer.num_training_batches)
        if self.live is None and n > 1 and time.monotonic() - self.beat > HEARTBEAT_S:  # a log: a line a minute
            progress.line(f"candidate {len(s.steps) + 1}/{len(s.order)} {s.candidate}: batch {batch_idx + 1}/{n}",
                          self.console)
            self.beat = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, module: ExtractionModule) -> None:
        self.progress.update(self.candidates, completed=len(module.search.steps), description="search done")
        self._show(module)
        self.stop()

    def on_exception(self, trainer, module, exception) -> None:
        self.stop()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _show(self, module: ExtractionModule) -> None:
        s = module.search
        self.state.plain = (f"kept state: KL {s.kl:.4f} · removed {len(s.removed)} of {len(s.steps)} decided · "
                            f"{module.params:,} non-embedding params")
        if self.live is None:
            for step in s.steps[self.logged:]:
                verdict = "removed" if step.removed else "kept"
                progress.line(f"candidate {step.index + 1}/{len(s.order)} {step.component}: {verdict} "
                              f"(ΔKL {step.delta:+.5f}); {self.state.plain}", self.console)
            self.logged = len(s.steps)
