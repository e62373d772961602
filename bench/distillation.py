"""Knowledge distillation, the paper's baseline: the loss, the student, and a LightningModule that trains it.

The student is a `PrunedModel` with every head and MLP kept (scheme "zero", so no folded constants) of a
chosen shape, or the extracted circuit itself. Its token embeddings (+ learned positions) and the (tied)
unembedding are the teacher's and stay frozen; only non-embedding parameters are trained and counted.
Shapes: N prompts, T positions, V vocabulary.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.ablation import no_means
from models.generate import greedy
from models.pruned import EMBEDDINGS, PrunedConfig, PrunedModel, count_params_of
from models.surgery import copy_ends, pruned_config
from models.types import BenchError
from tasks.base import Task
from tasks.data import SPLITS, Split, TaskAccuracy, TaskDataModule


def l_distill(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor | None = None,
              temperature: float = 1.0, ce_weight: float = 0.0) -> torch.Tensor:
    """The distillation loss at the answer position (the last prompt position); logits (N, V), targets (N,).

        L_distill = T² · mean_n KL( softmax(z_teacher,n / T) ‖ softmax(z_student,n / T) )
                    + ce_weight · mean_n CE( z_student,n , answer token_n )

    T is the temperature (default 1; the T² keeps gradient sizes comparable across T). The CE term is
    only defined for tasks whose target is the answer's token id (ioi, acronyms); ce_weight defaults to 0.
    """
    log_s = F.log_softmax(student.float() / temperature, dim=-1)  # (N, V)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)  # (N, V)
    loss = temperature ** 2 * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(student.float(), targets)
    return loss


def kl_mean(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) at temperature 1, mean over prompts; (N, V) each -> scalar."""
    return l_distill(student, teacher)


# ---- data: the task's splits, each row carrying the teacher's cached last-position logits -------------

class _TeacherRows(Dataset):
    def __init__(self, split: Split, teacher: torch.Tensor) -> None:
        self.input_ids, self.targets, self.teacher = split.input_ids, split.targets, teacher.float().cpu()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "targets": self.targets[i], "teacher": self.teacher[i]}


class DistillData(TaskDataModule):
    """The task data module whose full-split batches also hold "teacher": (N, V) cached logits.

    Rows travel together, so under DDP each rank gets matching prompts and teacher logits."""

    teacher: dict[str, torch.Tensor]  # split name -> (N, V), computed once before training

    @classmethod
    def wrap(cls, dm: TaskDataModule, task_name: str, teacher: dict[str, torch.Tensor]) -> "DistillData":
        out = cls.from_splits(task_name, dm.tokenizer, {name: dm.split(name) for name in SPLITS})
        out.teacher = teacher
        return out

    def _loader(self, name: str) -> DataLoader:
        split = self.split(name)
        return DataLoader(_TeacherRows(split, self.teacher[name]), batch_size=len(split), shuffle=False)


@torch.inference_mode()
def teacher_logits(teacher: nn.Module, dm: TaskDataModule, batch: int = 64) -> dict[str, torch.Tensor]:
    """The teacher's last-position logits for every split (test-heldout too), once: split name -> (N, V) float32
    on the CPU."""
    device = next(teacher.parameters()).device
    out = {}
    for name in SPLITS:
        ids = dm.split(name).input_ids  # (N, T)
        parts = [teacher(ids[i:i + batch].to(device), logits_to_keep=1).logits[:, -1]
                 for i in range(0, len(ids), batch)]
        out[name] = torch.cat(parts).float().cpu()
    return out


# ---- the student -------------------------------------------------------------------------------------

def teacher_config(teacher: nn.Module) -> PrunedConfig:
    """The teacher as an unpruned PrunedConfig (scheme "zero": no constants), covering its whole context."""
    return pruned_config(teacher, (), no_means())


def student_config(base: PrunedConfig, group: int, layers: int, heads: int, d_mlp: int, meta: dict | None = None):
    """A full student of the teacher's family: n_kv_heads = heads // group when divisible (GQA), else heads."""
    kv = heads // group if heads % group == 0 else heads
    return replace(base, d_mlp=d_mlp, n_heads=heads, n_kv_heads=kv, heads=[list(range(heads)) for _ in range(layers)],
                   mlps=[True] * layers, scheme="zero", meta=dict(meta or {}))


def size_student(base: PrunedConfig, group: int, n_layers: int, target: int, tol: float = 0.10) -> tuple[int, int, int]:
    """(layers, heads, d_mlp) whose non-embedding count is within ±tol of `target` and most like the teacher:
    the most heads, then the d_mlp closest to the teacher's (log ratio), then the most layers."""
    count = lambda l, h, m: count_params_of(student_config(base, group, l, h, m))["non_embedding"]  # noqa: E731
    best = None
    for layers in range(1, n_layers + 1):
        for heads in range(1, base.n_heads + 1):
            a = count(layers, heads, 0)
            d_mlp = round((target - a) / (count(layers, heads, 1) - a))
            if d_mlp < 1 or abs(count(layers, heads, d_mlp) - target) > tol * target:
                continue
            key = (-heads, abs(math.log(d_mlp / base.d_mlp)), -layers)
            if best is None or key < best[0]:
                best = (key, (layers, heads, d_mlp))
    if best is None:
        raise BenchError(f"no student of at most {n_layers} layers and {base.n_heads} heads has {target:,} "
                         f"non-embedding parameters (±{tol:.0%}); give --layers/--heads/--d-mlp instead")
    return best[1]


@torch.no_grad()
def init_student(cfg: PrunedConfig, teacher: nn.Module, seed: int) -> PrunedModel:
    """A random student (normal(0, 0.02) weights, zero biases, unit norms; seeded) with the teacher's
    embeddings and unembedding (frozen) and final norm (trainable)."""
    model = PrunedModel(cfg)
    g = torch.Generator().manual_seed(seed)
    for m in model.blocks.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 0.02, generator=g)
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
            m.weight.fill_(1.0)
        if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
            m.bias.zero_()
    return trainable(copy_ends(model, teacher))


def trainable(model: PrunedModel) -> PrunedModel:
    """Embeddings frozen, every other parameter trainable; folded constants are buffers and stay fixed."""
    for name, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(name not in EMBEDDINGS)
    return model.train()


# ---- the LightningModule -----------------------------------------------------------------------------

class DistillationModule(L.LightningModule):
    """Trains `student` on L_distill against cached teacher logits with Adam (full batch: one step per epoch).

    TensorBoard gets train/l_distill every epoch and val/kl (temperature 1), val/accuracy at each validation,
    all against the number of epochs done. The frozen embeddings are left out of checkpoints (they are the
    teacher's) and put back on load; the training wall time (without validation) is carried in the
    checkpoint so a resumed run reports the total."""

    def __init__(self, student: PrunedModel, task: Task, tokenizer, lr: float = 1e-3,
                 temperature: float = 1.0, ce_weight: float = 0.0):
        super().__init__()
        self.student, self.task, self.tokenizer = student, task, tokenizer
        self.lr, self.temperature, self.ce_weight = lr, temperature, ce_weight
        self.val_acc = TaskAccuracy(task, tokenizer)
        self.train_wall_s, self._t0 = 0.0, 0.0
        self._loss, self._val_kl = torch.zeros(()), torch.zeros(())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, T) -> (N, V) at the last position
        return self.student(ids, last_only=True)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = l_distill(self(batch["input_ids"]), batch["teacher"], batch["targets"], self.temperature, self.ce_weight)
        self._loss = loss.detach()
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        ids = batch["input_ids"]
        logits = self(ids)  # (N, V)
        self._val_kl = kl_mean(batch["teacher"], logits)
        self.val_acc.update(answers(self, ids, logits, self.task.n_new(self.tokenizer)).cpu(), batch["targets"].cpu())

    def on_validation_epoch_end(self) -> None:
        kl = self.trainer.strategy.reduce(self._val_kl, reduce_op="mean")
        acc = self.val_acc.compute()  # synced across ranks
        self.val_acc.reset()
        self._record({"val/kl": kl, "val/accuracy": acc})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=self.lr)

    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:  # runs before ModelCheckpoint saves, so the checkpoint holds it
        self.train_wall_s += time.perf_counter() - self._t0
        self._record({"train/l_distill": self.trainer.strategy.reduce(self._loss, reduce_op="mean")})

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        """To the progress bar, and to TensorBoard at step = epochs done (resuming purges steps past the checkpoint)."""
        self.log_dict(values, prog_bar=True, logger=False)
        if self.logger is not None and self.trainer.is_global_zero:
            for tag, value in values.items():
                self.logger.experiment.add_scalar(tag, float(value), self.trainer.global_step)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        for key in frozen_keys(self):
            checkpoint["state_dict"].pop(key, None)
        checkpoint["train_wall_s"] = self.train_wall_s

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        own = self.state_dict()
        for key in frozen_keys(self):
            checkpoint["state_dict"][key] = own[key]
        self.train_wall_s = float(checkpoint.get("train_wall_s", 0.0))

def frozen_keys(module: nn.Module) -> list[str]:
    """State-dict keys of the frozen embeddings: "student.wte.weight", ..."""
    return [k for k in module.state_dict() if k.removeprefix("student.") in EMBEDDINGS]


def answers(fn, ids: torch.Tensor, first_logits: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy answers (N, n_new), reusing the logits already computed for the first token."""
    first = first_logits.argmax(-1)[:, None]  # (N, 1)
    if n_new == 1:
        return first
    rest = greedy(fn, torch.cat([ids, first.to(ids)], dim=1), n_new - 1)  # (N, n_new - 1)
    return torch.cat([first, rest.to(first)], dim=1)
