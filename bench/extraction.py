"""Circuit extraction as a LightningModule: each training step decides one component of Algorithm 1."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from models.pruned import PrunedConfig, count_params_of
from models.search import Search, Step
from models.types import Component


class ExtractionModule(L.LightningModule):
    """Drives a `Search`; logs each decision to TensorBoard and the progress bar.

    It holds no trainable parameters and never optimises: the Trainer is the loop, the logger and the
    progress bar. `base_cfg` is the unpruned PrunedConfig, used to count parameters at every step.
    """

    def __init__(self, search: Search, base_cfg: PrunedConfig):
        super().__init__()
        self.search, self.base_cfg = search, base_cfg
        self.automatic_optimization = False

    def candidates(self) -> DataLoader:
        """One item per candidate component: the 'epoch' is one pass of Algorithm 1."""
        return DataLoader(list(range(len(self.search.order))), batch_size=None, shuffle=False)

    def remaining_params(self) -> int:
        removed, cfg = self.search.removed, self.base_cfg
        heads = [[h for h in hs if Component(l, h) not in removed] for l, hs in enumerate(cfg.heads)]
        mlps = [keep and Component(l) not in removed for l, keep in enumerate(cfg.mlps)]
        pruned = PrunedConfig(**{**cfg.to_dict(), "heads": heads, "mlps": mlps})
        return count_params_of(pruned)["non_embedding"]

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        step = self.search.step()
        params = self.remaining_params()
        self._log_tensorboard(step, params)
        self.log_dict({"kl": step.kl, "removed": float(len(self.search.removed)), "params": float(params)},
                      prog_bar=True, logger=False, on_step=True, batch_size=1)

    def _log_tensorboard(self, step: Step, params: int) -> None:
        if self.logger is None:
            return
        tb, i, c = self.logger.experiment, step.index, step.component
        tb.add_scalar("search/kl", step.kl, i)
        tb.add_scalar("search/delta_kl", step.delta, i)
        tb.add_scalar("search/kept", float(not step.removed), i)
        tb.add_scalar("search/candidate_layer", c.layer, i)
        tb.add_scalar("search/candidate_head", -1 if c.is_mlp else c.head, i)
        tb.add_scalar("search/non_embedding_params", params, i)
        tb.add_text("search/decision", f"{c}: {'removed' if step.removed else 'kept'} "
                                       f"(ΔKL {step.delta:+.5f}, KL {step.kl:.5f})", i)

    def configure_optimizers(self) -> None:
        return None
