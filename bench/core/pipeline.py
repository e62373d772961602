"""Algorithm 1 as the verbs run it: the search options, the model and splits prepared for a search, the search
under a Lightning Trainer, the evaluation of full and pruned model, and the TensorBoard log they share."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from bench.core.extraction import ExtractionModule, SearchProgress
from bench.core.fitting import FitOptions, fit_or_interrupt, lightning_device
from bench.core.match import ExtractionRun
from bench.core.memory import GB, check_fits
from bench.core.metrics import BATCH_SIZE, accuracies, accuracy, kl_to, prefixed, scores, worst
from bench.core.rundir import RunDir, default_dir
from models import arch, loading
from models.ablation import Means, collect_means
from models.fast import FastScorer
from models.generate import greedy, hf_last_logits
from models.macs import reference_macs, search_macs
from models.pruned import count_params
from models.search import HookScorer, Search
from models.surgery import prune, pruned_config
from models.types import SCHEMES, BenchError, candidate_order
from tasks import get_task
from tasks.base import Task, Tokenizer
from tasks.data import Split, TaskDataModule, off_template_split

ENGINES = {"fast": FastScorer, "reference": HookScorer}
SEARCH_RULES = ("mean", "template")
FIT_STEPS = 300
FIT_JITTER = 3
FIT_POOL = 64
FIT_CHECK_EVERY = 25


@dataclass(kw_only=True)
class SearchOptions:
    """What every verb that runs Algorithm 1 (extract, sweep) shares.

    Args:
        task: the task: acronyms, greater-than or ioi.
        model: smollm2-135m (embedded), a Hugging Face hub id such as gpt2, or a local HF directory.
        ablation: what a removed component is replaced with: SCHEMES_HELP.
        include_mlps: also try to remove each layer's MLP.
        n_patching: prompts whose activations give the means.
        n_val: prompts that drive the KL of the search.
        n_test: held-out prompts for the reported accuracy.
        n_offtemplate: prompts of each of the task's off-template phrasings that a position-free circuit and the
            full model are scored on beside the test prompts (they change nothing else); 0: none.
        seed: seeds the prompts and everything else; the same seed gives the same circuit.
        overwrite: replace an existing output directory.
        device: cpu, cuda, cuda:N or auto.
        dtype: float32 (default), bfloat16 or float16.
        batch_size: prompts per forward (means, search, evaluation); the circuit does not depend on it.
        cache_gb: activations kept between candidates, in GB; batches beyond it are recomputed for every candidate
            (slower, the same circuit).
        speculate: score up to this many candidates of a layer at once, each on top of the ones before it, and
            keep the scores up to the first candidate kept (the same circuit). The fast engine runs them as one
            batch: fewer, larger launches, for a GPU; on a CPU the dropped states are pure waste, so 1.
        fit_steps: after the search, train the removed components' constants for at most this many Adam steps on
            prompts of the training templates, to bring the pruned model's answers back to the full model's (the
            circuit and the kept weights do not change); 0 keeps the patching means, as the paper does. Zero
            ablation has no constants and is not fitted.
        fit_lr: the learning rate of that fit.
        fit_batch_size: prompts per fitting step.
        fit_pool: fit on this many batches of prompts whose full-model answers are computed once, in passes;
            0: fresh prompts in every step, the full model run in each.
        fit_check_every: every this many steps, the KL on two batches the fit does not train on; the fit stops
            once three checks in a row have not lowered it by 1%, and keeps the best check's constants; 0: no
            checks, all --fit-steps.
        fit_jitter: put 0 to this many neutral filler sentences before each fitting step's prompts, so that
            position-free constants do not learn the training templates' one length (ignored by the per-position
            mean, whose constants cover that length only); 0: none.
        search_rule: mean (a candidate stays removed if the mean KL over the validation prompts rises by less than
            alpha: the paper's) or template (only if the mean KL of every training template's validation prompts
            rises by less than alpha, so that no phrasing pays for a removal the others do not notice).
        search_every_length: draw the patching and validation prompts from the training templates of every token
            length, so that the search scores each phrasing, not only those of the test prompts' one length
            (position-free schemes; the per-position mean takes one length and refuses it).
        fit_every_length: fit position-free constants on the training templates of every token length, not only
            on those of the search's one length, so that they see phrasings of other shapes (ignored by the
            per-position mean).
    """

    task: str
    model: str = loading.DEFAULT_MODEL
    ablation: str = "mean-pooled"
    include_mlps: bool = True
    n_patching: int = 40
    n_val: int = 40
    n_test: int = 100
    n_offtemplate: int = 40
    seed: int = 0
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = BATCH_SIZE
    cache_gb: float = 2.0
    speculate: int = 1
    fit_steps: int = FIT_STEPS
    fit_lr: float = 3e-3
    fit_batch_size: int = 32
    fit_jitter: int = FIT_JITTER
    fit_every_length: bool = False
    search_every_length: bool = False
    search_rule: str = "mean"
    fit_pool: int = FIT_POOL
    fit_check_every: int = FIT_CHECK_EVERY

    def __post_init__(self) -> None:
        get_task(self.task)  # unknown task -> BenchError
        if self.ablation not in SCHEMES:
            raise BenchError(f"unknown --ablation {self.ablation!r}; use one of: {', '.join(SCHEMES)}")
        if self.n_offtemplate < 0:
            raise BenchError(f"--n-offtemplate must be >= 0 (0: none), got {self.n_offtemplate}")
        for name in ("n_patching", "n_val", "n_test", "batch_size", "speculate", "fit_batch_size"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1")
        if self.search_rule not in SEARCH_RULES:
            raise BenchError(f"unknown --search-rule {self.search_rule!r}; use one of: {', '.join(SEARCH_RULES)}")
        if self.search_every_length and SCHEMES[self.ablation].positional:
            raise BenchError(f"--search-every-length needs a position-free --ablation: per-position means "
                             f"({self.ablation}) take the one length they were taken at")
        if self.fit_jitter < 0:
            raise BenchError(f"--fit-jitter must be >= 0 (0: no filler sentences), got {self.fit_jitter}")
        for name, zero in (("fit_pool", "fresh prompts"), ("fit_check_every", "no checks")):
            if getattr(self, name) < 0:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 0 (0: {zero}), got {getattr(self, name)}")
        if self.fit_steps < 0:
            raise BenchError(f"--fit-steps must be >= 0 (0: keep the patching means), got {self.fit_steps}")
        if not (math.isfinite(self.fit_lr) and self.fit_lr > 0):
            raise BenchError(f"--fit-lr must be a finite number > 0, got {self.fit_lr}")
        if not (math.isfinite(self.cache_gb) and self.cache_gb >= 0):
            raise BenchError(f"--cache-gb must be a finite number >= 0, got {self.cache_gb}")
        loading.resolve_dtype(self.dtype)

    @property
    def fit(self) -> FitOptions:
        return FitOptions(self.fit_steps, self.fit_lr, self.fit_batch_size, self.fit_jitter, self.fit_every_length,
                          self.fit_pool, self.fit_check_every)


SearchOptions.__doc__ = SearchOptions.__doc__.replace(
    "SCHEMES_HELP", "; ".join(f"{s.name} ({s.help})" for s in SCHEMES.values()))


@dataclass
class ExtractArgs(SearchOptions):
    """Extract a task-specific circuit with Algorithm 1 and truly prune the model to it.

    Args:
        alpha: KL threshold; a component stays removed if ablating it raises the KL by less than alpha (default:
            the task's own `alpha` in its registry entry, chosen by measurement; the README gives each).
        out: the run directory (default runs/extract-TASK-MODEL-alphaA-ABLATION[-heads]-sSEED-HASH, where HASH
            covers every other option that changes the result).
        engine: fast (reuses cached activations, truly pruned upper layers) or reference (one full
            hooked forward per candidate); both give the same circuit.
    """

    alpha: float | None = None
    out: str | None = None
    engine: str = "fast"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha is None:
            self.alpha = get_task(self.task).alpha
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise BenchError(f"--alpha must be a finite number >= 0, got {self.alpha}")
        if self.engine not in ENGINES:
            raise BenchError(f"unknown --engine {self.engine!r}; use one of: {', '.join(ENGINES)}")

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        model = Path(self.model).name or self.model
        parts = "" if self.include_mlps else "-heads"
        return default_dir(f"extract-{self.task}-{model}-alpha{self.alpha:g}-{self.ablation}{parts}-s{self.seed}", self)


def patching_means(model, task, tokenizer, dm: TaskDataModule, scheme: str, batch_size: int) -> Means:
    """Means over the patching set (each of its lengths), in batches. Tasks answered in several tokens need the
    later positions too: the prompts are extended with the full model's own greedy tokens."""
    groups, n_extra = [g.input_ids for g in dm.patching.groups()], task.n_new(tokenizer) - 1
    if n_extra > 0:
        full = hf_last_logits(model)
        groups = [torch.cat([torch.cat([b, greedy(full, b, n_extra).cpu()], dim=1) for b in g.split(batch_size)])
                  for g in groups]
    return collect_means(model, groups[0] if len(groups) == 1 else groups, scheme,
                         min_len=dm.patching.lengths[0], batch_size=batch_size)


def trainer_for(device: torch.device, logger: TensorBoardLogger | None, epochs: int) -> L.Trainer:
    """A Trainer that only loops: on `device`, one epoch per candidate, our progress bar, no checkpoints."""
    accelerator, devices = lightning_device(device)
    return L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=devices, logger=logger or False,
                     callbacks=[SearchProgress()], enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1)


def search_circuit(args: ExtractArgs, model, dm: TaskDataModule, means: Means,
                   logger: TensorBoardLogger | None) -> tuple[Search, float]:
    """Algorithm 1 under a Lightning Trainer: the DataModule feeds the validation prompts in batches, one epoch per
    candidate. Returns the search and its wall time."""
    device = next(model.parameters()).device
    val = [g.input_ids for g in dm.val.groups()]  # one group per length, batched as the val loader batches
    bins = template_bins(dm.task, dm.val)[0] if args.search_rule == "template" else None
    scorer = ENGINES[args.engine](model, val, means, args.batch_size, args.cache_gb * GB, bins)
    s = pruned_config(model, (), means)
    search = Search(scorer, candidate_order(s.n_layers, s.n_heads, args.include_mlps), args.alpha, args.speculate,
                    "bins" if bins is not None else "mean")
    start, trainer = time.perf_counter(), trainer_for(device, logger, len(search.order))
    fit_or_interrupt(trainer, ExtractionModule(search, s), dm.val_dataloader())
    return search, time.perf_counter() - start


def template_bins(task: Task, split: Split) -> tuple[list[int], list[str]]:
    """Each prompt's template as an index (in `split.ordered`), and the templates those index (sorted by name)."""
    names = [task.template_of(e.prompt) or "?" for e in split.ordered]
    templates = sorted(set(names))
    index = {n: i for i, n in enumerate(templates)}
    return [index[n] for n in names], templates


def evaluate_models(task, tokenizer, model, pruned, dm: TaskDataModule, full_params: dict,
                    n_offtemplate: int = 40) -> dict:
    """Accuracy of the full and the pruned model, and the pruned model's KL to the full one, on the test split
    (training templates), on test-heldout (held-out templates) and, for a position-free model, on `n_offtemplate`
    prompts of each of the task's off-template phrasings; per template too, and the template where the pruned model
    falls furthest under the full one. In batches of the DataModule's batch size."""
    device, bs = next(model.parameters()).device, dm.batch_size or BATCH_SIZE
    full_fn = hf_last_logits(model)
    pruned_fn = lambda ids: pruned(ids.to(device), last_only=True)  # noqa: E731
    full, cut = dict(full_params), dict(count_params(pruned))
    off = None if pruned.cfg.positional or not n_offtemplate else off_template_split(task, tokenizer,
                                                                                      n_offtemplate, dm.seed)
    for prefix, split in (("test", dm.test), ("heldout", dm.heldout), ("offtemplate", off)):
        if split is None:
            continue
        for out, fn in ((full, full_fn), (cut, pruned_fn)):
            out[f"{prefix}_accuracy"], out[f"{prefix}_by_template"] = accuracies(task, tokenizer, fn, split, bs)
            out.update(prefixed(prefix, scores(task, tokenizer, fn, split, bs)))
        cut[f"{prefix}_kl_to_full"] = kl_to(full_fn, pruned_fn, split, bs)
        cut[f"{prefix}_worst"] = worst(cut[f"{prefix}_by_template"], full[f"{prefix}_by_template"])
    return {"full": full, "pruned": cut}


def build_cost(engine: str, shape: arch.Shape, patching: Split, n_new: int, val: Split, search: Search,
               fit: dict) -> dict:
    """metrics.json's build block: the MACs of the patching means (the full model on the patching prompts, extended
    by its answers), of the search (every state it scored, by `engine`, on each length of the validation prompts)
    and of the fit, and their sum."""
    means = sum(reference_macs(shape, len(g), g.lengths[0] + n_new - 1) for g in patching.groups())
    costs = [search_macs(shape, len(g), g.lengths[0], search.asked) for g in val.groups()]
    scored = sum(fast if engine == "fast" else ref for ref, fast in costs)
    return {"means_macs": means, "search_macs": scored, "fit_macs": fit["macs"], "macs": means + scored + fit["macs"]}


def searched_accuracy(task, tokenizer, model, removed, means: Means, dm: TaskDataModule) -> dict:
    """Test and held-out accuracy of the circuit as the search left it, the patching means as its constants (before
    any fit): the point a circuit reaches at the search's compute."""
    device, bs = next(model.parameters()).device, dm.batch_size or BATCH_SIZE
    pruned = prune(model, removed, means)
    fn = lambda ids: pruned(ids.to(device), last_only=True)  # noqa: E731
    return {f"{prefix}_accuracy": accuracy(task, tokenizer, fn, split, bs)
            for prefix, split in (("test", dm.test), ("heldout", dm.heldout))}


@dataclass(frozen=True)
class Prepared:
    """What a search needs before its first step: the model, the task's splits and the patching means."""

    model: nn.Module
    tokenizer: Tokenizer
    task: Task
    dm: TaskDataModule
    means: Means
    shape: arch.Shape
    device: torch.device


def prepare(args: SearchOptions, splits: dict[str, Split] | None = None,
            data: type[TaskDataModule] = TaskDataModule) -> Prepared:
    """Seed, load the model, build the task's splits with `data` (or take `splits`, a run's saved ones) and take the
    means over the patching set."""
    L.seed_everything(args.seed, verbose=False)
    device, dtype = loading.resolve_device(args.device), loading.resolve_dtype(args.dtype)
    model, tokenizer = loading.load_model(args.model, device=device, dtype=dtype)
    shape, task = arch.check_supported(model), get_task(args.task)
    spaces = task.fit_spaces(tokenizer) if args.search_every_length else task.spaces(tokenizer, heldout=False)
    t = max(s.length for s in spaces) + task.n_new(tokenizer) - 1
    check_fits(shape, t, args.n_val, args.batch_size, args.cache_gb, device, dtype.itemsize, args.speculate)
    if splits is None:
        dm = data(args.task, tokenizer, args.n_patching, args.n_val, args.n_test, args.seed, args.batch_size,
                  every_length=args.search_every_length)
    else:
        dm = TaskDataModule.from_splits(task, tokenizer, splits, args.batch_size)
    dm.setup()
    means = patching_means(model, task, tokenizer, dm, args.ablation, args.batch_size)
    return Prepared(model, tokenizer, task, dm, means, shape, device)


def prepare_run(saved: ExtractionRun, device: str) -> tuple[ExtractArgs, Prepared]:
    """A finished run's options (on `device`, publishing nowhere), and the model and patching means prepared on the
    run's own prompts, whatever the task registry holds now."""
    cfg = RunDir(saved.path).config()["args"]
    args = ExtractArgs(**{**cfg, "device": device, "out": None, "overwrite": False})
    return args, prepare(args, saved.splits)


FINAL = tuple(f"final/{k}" for k in ("full_test_accuracy", "full_heldout_accuracy", "pruned_test_accuracy",
                                      "pruned_heldout_accuracy", "pruned_test_kl_to_full",
                                      "pruned_heldout_kl_to_full", "non_embedding_cut"))


def tb_logger(run: Path, resolved: dict) -> TensorBoardLogger:
    """TensorBoard under run/tb, with the resolved options as hparams. The final test metrics are declared with
    them (NaN until `log_final`, as Lightning has it), so TensorBoard's HPARAMS tab shows them side by side."""
    logger = TensorBoardLogger(run, name="tb", version="", default_hp_metric=False)
    logger.log_hyperparams({k: v for k, v in resolved.items() if v is not None}, metrics=dict.fromkeys(FINAL, math.nan))
    return logger


def log_final(logger: TensorBoardLogger, metrics: dict, step: int) -> None:
    """The final test metrics, at the step after the last candidate."""
    full, cut = metrics["full"], metrics["pruned"]
    values = [full["test_accuracy"], full["heldout_accuracy"], cut["test_accuracy"], cut["heldout_accuracy"],
              cut["test_kl_to_full"], cut["heldout_kl_to_full"], 1 - cut["non_embedding"] / full["non_embedding"]]
    logger.log_metrics(dict(zip(FINAL, map(float, values))), step=step)
    logger.finalize("success")


def templates(dm: TaskDataModule) -> dict:
    """The names of the templates behind the splits: training (patching, val, test) and held-out."""
    return {kind: dm.task.template_names(dm.tokenizer, heldout) for kind, heldout in (("training", False),
                                                                                       ("heldout", True))}
