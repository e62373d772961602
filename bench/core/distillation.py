"""Knowledge distillation, the paper's baseline: the loss, the student, the LightningModule that trains it and its
Trainer callbacks (the training data, a task stream or a pool, is in `distill_data.py`).

The student is a `PrunedModel` with every head and MLP kept (scheme "zero", so no folded constants) of a
chosen shape, or the extracted circuit itself. Its token embeddings (+ learned positions) and the (tied)
unembedding are the teacher's and stay frozen; only non-embedding parameters are trained and counted.
Shapes: N prompts, T positions, V vocabulary.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.text import Text

from bench.core import progress
from models.ablation import no_means
from models.generate import greedy
from models.pruned import EMBEDDINGS, PrunedConfig, PrunedModel, count_params_of
from models.surgery import copy_ends, pruned_config
from models.types import BARE, BenchError
from tasks.base import Task
from tasks.data import TaskAccuracy


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


POSITIONS = ("last", "answers", "prompt")  # where L_distill is taken: the paper's last prompt position, every
# answer position (greater-than's second digit), or every position of the prompt and its answers


@torch.no_grad()
def teacher_targets(model: nn.Module, ids: torch.Tensor, k: int, positions: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's logits where the loss is taken: (ids (N, T), logits (N, 1, V)) at the last position;
    (ids extended by the teacher's k - 1 greedy answer tokens (N, T + k - 1), its logits at the k answer positions
    (N, k, V)); or those ids and its logits at every one of their positions (N, T + k - 1, V)."""
    if positions == "last":
        return ids, model(ids, logits_to_keep=1).logits[:, -1:]
    ext, answers = teacher_answer(model, ids, k)
    return (ext, answers) if positions == "answers" else (ext, model(ext).logits)


def loss_positions(positions: str, t: int, k: int) -> int:
    """How many positions of a t-token prompt with k answer tokens the loss is taken at."""
    return {"last": 1, "answers": k, "prompt": t + k - 1}[positions]


def kl_mean(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) at temperature 1, mean over prompts; (N, V) each -> scalar."""
    return l_distill(student, teacher)


# ---- the student -------------------------------------------------------------------------------------

def teacher_config(teacher: nn.Module) -> PrunedConfig:
    """The teacher as an unpruned PrunedConfig (scheme "zero": no constants), covering its whole context."""
    return pruned_config(teacher, (), no_means())


def student_config(base: PrunedConfig, group: int, layers: int, heads: int, d_mlp: int, meta: dict | None = None):
    """A full student of the teacher's family: n_kv_heads = heads // group when divisible (GQA), else heads."""
    kv = heads // group if heads % group == 0 else heads
    return replace(base, d_mlp=d_mlp, n_heads=heads, n_kv_heads=kv, heads=[list(range(heads)) for _ in range(layers)],
                   mlps=[True] * layers, scheme=BARE, meta=dict(meta or {}))


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
    """Trains `student` on L_distill with Adam, one step per batch of the task stream. The teacher is frozen and not
    a submodule (never trained, never checkpointed); its answer-position logits are computed in the step under
    no_grad, or come with the batch from a `TeacherPool` (see README and results/distill-teacher-cpu.md).

    TensorBoard gets train/l_distill every `log_every` steps, and val/kl, val/accuracy, heldout/kl and
    heldout/accuracy at each validation, against the steps done. The frozen embeddings are left out of checkpoints
    (they are the teacher's) and put back on load; the training wall time (validation excluded) is carried in the
    checkpoint so a resumed run reports the total."""

    def __init__(self, student: PrunedModel, teacher: nn.Module, task: Task, tokenizer, lr: float = 1e-3,
                 temperature: float = 1.0, ce_weight: float = 0.0, log_every: int = 10, positions: str = "last"):
        super().__init__()
        self.positions, self.n_new = positions, task.n_new(tokenizer)  # where the loss is taken (POSITIONS)
        self.student, self._teacher, self.task, self.tokenizer = student, [teacher.eval()], task, tokenizer
        self.lr, self.temperature, self.ce_weight, self.log_every = lr, temperature, ce_weight, log_every
        self.accs = nn.ModuleList([TaskAccuracy(task, tokenizer), TaskAccuracy(task, tokenizer)])  # val, held-out
        self.train_wall_s, self._mark = 0.0, 0.0
        self._kl = torch.zeros(2, 2, dtype=torch.float64)  # per eval set: KL sum, prompts

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, T) -> (N, V) at the last position
        return self.student(ids, last_only=True)

    @torch.no_grad()
    def teacher_logits(self, ids: torch.Tensor) -> torch.Tensor:  # (N, T) -> (N, V)
        return self._teacher[0](ids, logits_to_keep=1).logits[:, -1]

    def on_fit_start(self) -> None:
        self._teacher[0].to(self.device)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids = batch["input_ids"]
        if "teacher" in batch:  # a pool's are cached: (N, V) at the last position, or (N, P, V) at the last P
            teacher = batch["teacher"] if batch["teacher"].dim() == 3 else batch["teacher"][:, None]
        else:
            ids, teacher = teacher_targets(self._teacher[0], ids, self.n_new, self.positions)
        student = self.student.last_logits(ids, teacher.shape[1])  # (N, P, V)
        targets = batch["targets"] if teacher.shape[1] == 1 else None  # the CE term: the answer token (last only)
        loss = l_distill(student.flatten(0, 1), teacher.flatten(0, 1), targets, self.temperature, self.ce_weight)
        if (self.global_step + 1) % self.log_every == 0:
            self._record({"train/l_distill": loss.detach()}, self.global_step + 1)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        ids = batch["input_ids"]
        logits = self(ids)  # (N, V)
        self._kl[dataloader_idx] += torch.tensor([float(kl_mean(self.teacher_logits(ids), logits)) * len(ids),
                                                  len(ids)], dtype=torch.float64)
        got = answers(self, ids, logits, self.task.n_new(self.tokenizer))
        self.accs[dataloader_idx].update(got.cpu(), batch["targets"].cpu())

    def on_validation_epoch_end(self) -> None:
        kl = self._kl  # float64 stays on the CPU (MPS has none) unless ranks must add theirs up
        if self.trainer.world_size > 1:
            kl = self.trainer.strategy.reduce(kl.to(self.device), reduce_op="sum")
        values = {}
        for i, prefix in enumerate(("val", "heldout")):
            values[f"{prefix}/kl"] = kl[i, 0] / kl[i, 1].clamp(min=1)
            values[f"{prefix}/accuracy"] = self.accs[i].compute()  # synced across ranks
            self.accs[i].reset()
        self._kl.zero_()
        self._record(values, self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=self.lr)

    def on_train_start(self) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._tick()

    def on_validation_start(self) -> None:
        self._tick()

    def on_validation_end(self) -> None:
        self._mark = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.train_wall_s, self._mark = self.train_wall_s + now - self._mark, now

    def _record(self, values: dict[str, torch.Tensor], step: int) -> None:
        """To the progress bar, and to TensorBoard at `step` (resuming purges steps past the checkpoint)."""
        self.log_dict(values, prog_bar=True, logger=False)
        if self.logger is not None and self.trainer.is_global_zero:
            self.logger.log_metrics({tag: float(v) for tag, v in values.items()}, step=step)

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


# ---- the Trainer's callbacks ------------------------------------------------------------------------

def progress_bar() -> Callback:
    """A live 'step k/N' bar in a terminal; in a log file (where a live bar prints nothing for hours) a line per
    validation."""
    return StepBar() if Console().is_terminal else ValidationLines()


class StepBar(Callback):
    """A rich bar over the optimizer steps (Lightning's counts epochs, which mean nothing on a stream), with a line
    under it for the last logged L_distill and validation numbers."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.progress, self.state = progress.bar("step"), Text()
        self.task = self.progress.add_task("", total=trainer.max_steps, completed=trainer.global_step)
        self.live = progress.live(self.progress, self.state)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.progress.update(self.task, completed=trainer.global_step)
        self.state.plain = _state(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.live.stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.live.stop()


def _state(trainer: L.Trainer) -> str:
    m = {k: float(v) for k, v in trainer.progress_bar_metrics.items()}
    parts = [f"{k} {m[k]:.4f}" for k in ("train/l_distill", "fit/kl", "val/kl", "heldout/kl") if k in m]
    return ", ".join(parts + [f"{k} {m[k]:.1%}" for k in ("val/accuracy", "heldout/accuracy") if k in m])


class ValidationLines(Callback):
    """One flushed line per validation: steps done, the last logged L_distill, validation and held-out numbers."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        progress.line(f"step {trainer.global_step}/{trainer.max_steps}: {_state(trainer)}")


class FinalCheckpoint(Callback):
    """last.ckpt at the end of training too (inside the training processes, so it holds the true loop state
    under every strategy): --resume with more --steps continues from there."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
