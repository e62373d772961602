"""`bench distill`: the paper's baseline. A student learns the teacher's answer distribution (L_distill,
see `bench.core.distillation.l_distill`) with Adam on a stream of fresh task prompts, under a Lightning Trainer with
checkpoints."""
from __future__ import annotations

import json
import math
import shutil
from functools import partial
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from bench.core.budget import StudentCost
from bench.core.distill_data import DistillData
from bench.core.distillation import (POSITIONS, DistillationModule, FinalCheckpoint, init_student, loss_positions,
                                progress_bar, size_student, student_config, teacher_config, teacher_targets,
                                trainable)
from bench.core.metrics import accuracy, kl_to, prefixed, scores
from bench.core.match import ExtractionRun, match_info, read_run
from bench.core.memory import batch_bytes, require
from bench.core.rundir import CONFIG, MODELS, RunDir, check_out, default_dir, write_json
from models import arch, loading
from models.generate import hf_last_logits
from models.io import MANIFEST, load_pruned, save_pruned
from models.pruned import PrunedConfig, PrunedModel, count_params, count_params_of
from models.types import BenchError
from tasks import get_task
from tasks.base import first_token_is_target
from tasks.data import TaskDataModule

EVAL_SPLITS = ("val", "test", "test-heldout")

INITS = ("random", "circuit")
BUDGETS = ("steps", "matched")
# what may change between a run and its --resume; everything else must match config.json
RESUMABLE = ("steps", "val_every", "ckpt_every", "log_every", "out", "overwrite", "resume", "device", "accelerator",
             "devices", "strategy")


@dataclass
class DistillArgs:
    """Distil a task into a small student trained on the teacher's answer distribution (the paper's baseline).

    Args:
        task: the task: acronyms, greater-than or ioi.
        match: an extraction run directory: size the student to its pruned model's non-embedding parameter
            count (±10%) and validate/test on that run's own splits; the teacher is the run's model.
        layers: the student's layers (with --heads and --d-mlp, instead of --match).
        heads: the student's attention heads per layer (K/V heads follow the teacher's GQA group if they divide).
        d_mlp: the student's MLP width.
        init: random (seeded normal(0, 0.02) body) or circuit (fine-tune --match's pruned model).
        model: the teacher (default: --match's model, else smollm2-135m).
        steps: Adam steps, each on a fresh batch of the task stream (the paper's "20000 epochs").
        positions: where L_distill is taken: last (the last prompt position, the paper's), answers (every answer
            position, the prompt extended by the teacher's greedy answer: greater-than's second digit too) or prompt
            (every position of the prompt and its answers).
        budget: steps (train --steps steps) or matched (train until the student's build MACs, the teacher's pool
            included, reach those of the --match run's circuit: its search and fit; --steps is then ignored).
        teacher_pool: 0 (default): the teacher runs in every step on fresh prompts. N > 0: train on a pool of the
            stream's first N prompts instead, passing over it in seeded orders, with the teacher's logits computed
            once (N × vocabulary floats in memory).
        batch_size: prompts per step (per device under DDP), and per evaluation forward.
        lr: Adam learning rate.
        temperature: softmax temperature T of L_distill.
        ce_weight: weight of the cross-entropy to the answer token (tasks whose target is a token id only).
        n_val: validation prompts (without --match).
        n_test: test prompts (without --match).
        seed: seeds the prompt stream, the evaluation splits and the student's initialisation.
        val_every: validate every this many steps (and at the end).
        ckpt_every: write OUT/checkpoints/last.ckpt every this many steps (and at the end).
        log_every: log the training loss every this many steps.
        precision: the Trainer's precision (32-true, bf16-mixed, 16-mixed, ...).
        out: the run directory (default runs/distill-TASK-...-sSEED-HASH; --steps and --resume may change on
            the same directory).
        overwrite: replace an existing run directory.
        resume: continue from OUT/checkpoints/last.ckpt, the stream where it left off (--steps may be raised).
        device: where the teacher is loaded, and the final test evaluation.
        accelerator: the Lightning Trainer's accelerator (auto, cpu, gpu, ...).
        devices: the Trainer's devices (1, 2, auto, ...).
        strategy: the Trainer's strategy (auto, ddp, ...).
    """

    task: str
    match: str | None = None
    layers: int | None = None
    heads: int | None = None
    d_mlp: int | None = None
    init: str = "random"
    model: str | None = None
    steps: int = 20000
    positions: str = "last"
    budget: str = "steps"
    teacher_pool: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 1.0
    ce_weight: float = 0.0
    n_val: int = 40
    n_test: int = 100
    seed: int = 0
    val_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 10
    precision: str = "32-true"
    out: str | None = None
    overwrite: bool = False
    resume: bool = False
    device: str = "auto"
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        task = get_task(self.task)  # unknown task -> BenchError
        self._check_shape()
        if self.init not in INITS:
            raise BenchError(f"unknown --init {self.init!r}; use one of: {', '.join(INITS)}")
        if self.positions not in POSITIONS:
            raise BenchError(f"unknown --positions {self.positions!r}; use one of: {', '.join(POSITIONS)}")
        if self.ce_weight > 0 and self.positions != "last":
            raise BenchError("--ce-weight takes the answer token at the last position; give --positions last with it")
        if self.budget not in BUDGETS:
            raise BenchError(f"unknown --budget {self.budget!r}; use one of: {', '.join(BUDGETS)}")
        if self.budget == "matched" and self.match is None:
            raise BenchError("--budget matched trains for the build MACs of a circuit; give its run with --match")
        if self.init == "circuit" and self.match is None:
            raise BenchError("--init circuit fine-tunes an extracted circuit; give its run with --match RUN_DIR")
        for name, value, low in (("lr", self.lr, "> 0"), ("temperature", self.temperature, "> 0"),
                                 ("ce-weight", self.ce_weight, ">= 0")):
            if not (math.isfinite(value) and (value > 0 or (low == ">= 0" and value == 0))):
                raise BenchError(f"--{name} must be a finite number {low}, got {value}")
        if self.ce_weight > 0 and task.correct is not first_token_is_target:
            raise BenchError(f"task {self.task}'s target is not an answer token, so --ce-weight must be 0")
        for name in ("steps", "batch_size", "n_val", "n_test", "val_every", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.teacher_pool < 0:
            raise BenchError(f"--teacher-pool must be >= 0 (0: the teacher in every step), got {self.teacher_pool}")
        if self.overwrite and self.resume:
            raise BenchError("give either --overwrite (start again) or --resume (continue), not both")
        if self.match is not None and self.out_dir.resolve() == Path(self.match).resolve():
            raise BenchError(f"--out {self.out} is the --match run itself; choose another --out")

    def _check_shape(self) -> None:
        shape = {"layers": self.layers, "heads": self.heads, "d-mlp": self.d_mlp}
        given = [k for k, v in shape.items() if v is not None]
        if self.match is not None and given:
            raise BenchError("give either --match RUN_DIR or --layers/--heads/--d-mlp, not both")
        if self.match is None and len(given) < 3:
            raise BenchError("give --match RUN_DIR, or all of --layers L --heads H --d-mlp M")
        for k in given:
            if shape[k] < 1:
                raise BenchError(f"--{k} must be >= 1, got {shape[k]}")
        if self.match is not None and not Path(self.match).is_dir():
            raise BenchError(f"--match {self.match} is not a directory; give a run written by `bench extract`")

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        what = (Path(self.match).resolve().name if self.match else
                f"{Path(self.model or loading.DEFAULT_MODEL).name}-L{self.layers}H{self.heads}M{self.d_mlp}")
        return default_dir(f"distill-{self.task}-{what}-{self.init}-s{self.seed}", self,
                           skip=("resume", "steps", "ckpt_every", "val_every", "log_every"))


def teacher_name(args: DistillArgs, run: ExtractionRun | None) -> str:
    if run is None:
        return args.model or loading.DEFAULT_MODEL
    if args.task != run.circuit.task:
        raise BenchError(f"{run.path} was extracted for task {run.circuit.task}; pass --task {run.circuit.task}")
    if args.model is not None and args.model != run.circuit.model:
        raise BenchError(f"{run.path} was extracted from {run.circuit.model}; drop --model or pass that one")
    return run.circuit.model


def check_start(out: Path, args: DistillArgs) -> None:
    """Before any work: refuse a non-empty OUT without --overwrite/--resume, or a --resume that cannot be."""
    if not args.resume:
        return check_out(out, args.overwrite)
    ckpt = out / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        again = "start again with --overwrite" if out.is_dir() and any(out.iterdir()) else "run without --resume"
        raise BenchError(f"nothing to resume: {ckpt} does not exist; {again}")
    if not RunDir(out).is_run:
        raise BenchError(f"{out} has no config.json, so it cannot be resumed; start again with --overwrite")
    before = RunDir(out).config().get("args", {})
    now = asdict(args)
    # an option absent from `before` was added since, with the behaviour the run had as its default
    changed = [k for k in now if k not in RESUMABLE and before.get(k, now[k]) != now[k]]
    if changed:
        k = changed[0]
        raise BenchError(f"{out} was started with --{k.replace('_', '-')} {before.get(k)}, not {now[k]}; "
                         "resume with the same settings (only --steps, --val-every, --ckpt-every, --log-every, --out "
                         "and device settings may change)")
    done = steps_in(ckpt)
    if args.budget == "steps" and done > args.steps:
        raise BenchError(f"{ckpt} already holds {done} steps; resume with --steps >= {done}")


def steps_in(ckpt: Path) -> int:
    """Optimizer steps a checkpoint has trained."""
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise BenchError(f"{ckpt} is unreadable ({type(e).__name__}); start again with --overwrite") from None


def data_module(args: DistillArgs, run: ExtractionRun | None, tokenizer, vocab: int) -> TaskDataModule:
    """The evaluation splits: --match's own, or drawn (patching: one prompt, which nothing uses)."""
    if run is None:
        dm = TaskDataModule(args.task, tokenizer, 1, args.n_val, args.n_test, args.seed)
        dm.setup()
        return dm
    if max(max(e.input_ids) for s in run.splits.values() for e in s.examples) >= vocab:
        raise BenchError(f"{run.path}/splits hold token ids beyond the teacher's vocabulary; re-run `bench extract`")
    return TaskDataModule.from_splits(args.task, tokenizer, run.splits)


def make_student(args: DistillArgs, run: ExtractionRun | None, teacher) -> tuple[PrunedModel, dict]:
    """The student and how it was sized: --init circuit loads --match's pruned model; otherwise a random
    body of the --match-sized or explicit shape."""
    s = arch.check_supported(teacher)
    if args.init == "circuit":
        student, _ = load_pruned(RunDir(run.path).model)
        c = student.cfg
        if (c.family, c.d_model, c.vocab_size) != (s.family, s.d_model, s.vocab_size):
            raise BenchError(f"{RunDir(run.path).model} does not belong to the teacher {run.circuit.model}")
        return trainable(student), {"layers": c.n_layers, "heads": sum(map(len, c.heads)), "mlps": sum(c.mlps)}
    base = teacher_config(teacher)
    shape = size_student(base, s.group, s.n_layers, run.target) if run else (args.layers, args.heads, args.d_mlp)
    cfg = student_config(base, s.group, *shape, meta={"task": args.task, "teacher": teacher.config._name_or_path})
    return init_student(cfg, teacher, args.seed), {"layers": cfg.n_layers, "heads": cfg.n_heads,
                                                   "kv_heads": cfg.n_kv_heads, "d_mlp": cfg.d_mlp}


def student_report(student: PrunedModel, task, tokenizer, dm: TaskDataModule, teacher_fn, args) -> dict:
    """Accuracy and KL to the teacher on test, test-heldout and val of the student as it is now, in batches."""
    device, bs = loading.resolve_device(args.device), args.batch_size
    student.to(device).eval()  # outside inference mode, so the parameters stay trainable
    fn = lambda ids: student(ids.to(device), last_only=True).float()  # noqa: E731
    out = {}
    for prefix, split in (("test", dm.test), ("heldout", dm.heldout), ("val", dm.val)):
        out[f"{prefix}_accuracy"] = accuracy(task, tokenizer, fn, split, bs)
        out.update(prefixed(prefix, scores(task, tokenizer, fn, split, bs)))
        out[f"{prefix}_kl_to_teacher"] = kl_to(teacher_fn, fn, split, bs)
    return out


def make_trainer(args: DistillArgs, out: Path) -> L.Trainer:
    """The Trainer (built before any work, so a bad --accelerator/--devices/--strategy/--precision is one line).
    Training is step-based: --steps optimizer steps on the stream, validation every --val-every steps."""
    # a resumed run's TensorBoard steps past its checkpoint are purged: they are trained again
    purge = steps_in(out / "checkpoints" / "last.ckpt") + 1 if args.resume else None
    logger = TensorBoardLogger(out, name="tb", version="", default_hp_metric=False, purge_step=purge)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", every_n_train_steps=args.ckpt_every,
                           save_top_k=1, enable_version_counter=False)
    final = FinalCheckpoint(out / "checkpoints" / "last.ckpt")
    try:
        return L.Trainer(max_steps=args.steps, max_epochs=-1, accelerator=args.accelerator, devices=args.devices,
                         strategy=args.strategy, precision=args.precision, logger=logger,
                         callbacks=[ckpt, final, progress_bar()], enable_progress_bar=False,
                         val_check_interval=args.val_every,
                         check_val_every_n_epoch=None, num_sanity_val_steps=0, log_every_n_steps=args.log_every,
                         enable_model_summary=False, default_root_dir=out)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:
        raise BenchError(f"the Trainer refuses --accelerator {args.accelerator} --devices {args.devices} --strategy "
                         f"{args.strategy} --precision {args.precision} ({str(e).strip().splitlines()[0]}); "
                         "see `bench distill --help`") from None


def train(args: DistillArgs, trainer: L.Trainer, out: Path, module: DistillationModule,
          data: DistillData) -> tuple[int, int, float]:
    """Fit, resuming from last.ckpt with --resume; (steps done, steps resumed from, training wall seconds)."""
    ckpt = out / "checkpoints" / "last.ckpt"
    start = steps_in(ckpt) if args.resume else 0
    trainer.fit(module, datamodule=data, ckpt_path=ckpt if args.resume else None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # rank 0 evaluates alone; the other ranks are done
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    return int(state["global_step"]), start, float(state.get("train_wall_s", 0.0))


def distill(args: DistillArgs) -> Path:
    """Run `bench distill`; returns the run directory."""
    out, rank0 = args.out_dir, rank_zero_only.rank == 0
    if rank0:  # DDP's other ranks re-run this command once rank 0 has started writing OUT
        check_start(out, args)
    trainer = make_trainer(args, out)
    run = read_run(Path(args.match)) if args.match else None
    name, task = teacher_name(args, run), get_task(args.task)
    L.seed_everything(args.seed, verbose=False)
    device = loading.resolve_device(args.device)
    teacher, tokenizer = loading.load_model(name, device=device)
    dm = data_module(args, run, tokenizer, teacher.config.vocab_size)
    check_batch(teacher, task, tokenizer, args, device)
    student, shape = make_student(args, run, teacher)
    teacher_fn = hf_last_logits(teacher)
    tcfg = teacher_config(teacher)
    teacher_info = {"model": name, "test_accuracy": accuracy(task, tokenizer, teacher_fn, dm.test, args.batch_size),
                    "heldout_accuracy": accuracy(task, tokenizer, teacher_fn, dm.heldout, args.batch_size),
                    **prefixed("test", scores(task, tokenizer, teacher_fn, dm.test, args.batch_size)),
                    **prefixed("heldout", scores(task, tokenizer, teacher_fn, dm.heldout, args.batch_size)),
                    **count_params_of(tcfg)}
    at_init = student_report(student, task, tokenizer, dm, teacher_fn, args)
    module = DistillationModule(trainable(student.cpu()), teacher, task, tokenizer, args.lr, args.temperature,
                                args.ce_weight, args.log_every, args.positions)
    data = DistillData.wrap(dm, args.task, args.seed, args.batch_size)
    k = task.n_new(tokenizer)
    if args.teacher_pool:
        targets = teacher_fn if args.positions == "last" else partial(teacher_targets, teacher, k=k,
                                                                       positions=args.positions)
        t = max(data.step_lengths())
        data.add_pool(args.teacher_pool, targets, teacher.config.vocab_size * loss_positions(args.positions, t, k),
                      device)
    cost = student_cost(args, data, module.student.cfg, tcfg, k, max(1, trainer.world_size))
    target = circuit_macs(run) if args.budget == "matched" else None
    trainer.fit_loop.epoch_loop.max_steps = args.steps if target is None else cost.matched(target)
    if rank0:
        begin(out, args, name, shape, dm)
        if not args.resume:
            log_eval(out, at_init, 0)  # the curves start where the student starts
    steps, start, wall = train(args, trainer, out, module, data)
    if not rank0:
        return out
    teacher.to(device)
    report = student_report(module.student, task, tokenizer, dm, teacher_fn, args)
    if steps > start and steps % args.val_every:  # the end of training is always validated
        log_eval(out, report, steps)
    student_info = {"init": args.init, "shape": shape, **count_params(module.student), **report,
                    "test_kl_to_teacher_at_init": at_init["test_kl_to_teacher"],
                    "heldout_kl_to_teacher_at_init": at_init["heldout_kl_to_teacher"]}
    metrics = {"task": args.task, "teacher": teacher_info, "student": student_info,
               "match": match_info(run, student_info),
               "train": {**train_info(args, steps, start, wall, data, cost.world),
                         **cost.block(steps, args.budget, target)}}
    finish(out, args, module.student, metrics)
    return out


def circuit_macs(run: ExtractionRun) -> int:
    try:
        return int(run.metrics["build"]["macs"])
    except (KeyError, TypeError, ValueError):
        raise BenchError(f"{run.path} records no build MACs (it was extracted before they were counted); re-run "
                         "`bench extract`, or give --budget steps") from None


def student_cost(args: DistillArgs, data: DistillData, student: PrunedConfig, teacher: PrunedConfig, k: int,
                 world: int) -> StudentCost:
    """The distillation's MACs from its shapes: the pool (its prompts with their answers, where the loss takes
    them) and every step."""
    pool = tuple(data.pool.ids.shape) if data.pool is not None else None
    extra = 0 if args.positions == "last" else k - 1
    return StudentCost(student, teacher, args.batch_size, data.step_lengths(extra), pool, world,
                       lambda t: loss_positions(args.positions, t - extra, k))


def train_info(args: DistillArgs, steps: int, start: int, wall: float, data: DistillData, world: int) -> dict:
    """metrics.json's train block: how much training, on how many distinct prompts, how long, at what precision."""
    return {"steps": steps, "steps_requested": args.steps if args.budget == "steps" else None,
            "resumed_from_step": start,
            "batch_size": args.batch_size, "devices": world, "distinct_prompts": data.distinct(steps, world),
            "teacher_pool": args.teacher_pool, "teacher_pool_s": data.pool_s, "wall_s": wall,
            "precision": args.precision, "optimizer": "Adam", "lr": args.lr,
            "temperature": args.temperature, "ce_weight": args.ce_weight,
            "n": {k: len(data.split(k)) for k in EVAL_SPLITS}}


def check_batch(teacher, task, tokenizer, args: DistillArgs, device: torch.device) -> None:
    """Refuse, in one line, a --batch-size whose training step (teacher forward, student forward and backward:
    about four forwards' activations) cannot fit the free memory."""
    t = task.spaces(tokenizer, heldout=False)[0].length
    require(4 * batch_bytes(arch.check_supported(teacher), t, args.batch_size, 4), device,
            f"--batch-size {args.batch_size}", "one training step", "lower --batch-size")


def log_eval(out: Path, report: dict, step: int) -> None:
    """An evaluation outside the Trainer (before training, and at the end) as a validation point of the curves."""
    with SummaryWriter(out / "tb") as tb:
        for prefix, split in (("val", "val"), ("heldout", "heldout")):
            tb.add_scalar(f"{prefix}/kl", report[f"{split}_kl_to_teacher"], step)
            tb.add_scalar(f"{prefix}/accuracy", report[f"{split}_accuracy"], step)


def begin(out: Path, args: DistillArgs, teacher: str, shape: dict, dm: TaskDataModule) -> None:
    """Just before training: clear OUT for --overwrite, then write config.json and the prompts."""
    if args.overwrite and out.is_dir():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    rd = RunDir(out)
    rd.unfinish()
    if not args.resume:
        rd.write_config("distill", asdict(args), teacher=teacher, student_shape=shape)
        for name in EVAL_SPLITS:  # training prompts are a stream: a function of the seed, not a file
            rd.write_split(dm.split(name))


def finish(out: Path, args: DistillArgs, student: PrunedModel, metrics: dict) -> None:
    """Write the student (manifest with a "distill" provenance), config.json with the steps run, metrics.json last."""
    rd = RunDir(out)
    save_pruned(student.cpu(), rd / MODELS[1], circuit=None)
    manifest = json.loads((rd / MODELS[1] / MANIFEST).read_text())
    manifest["distill"] = {"teacher": metrics["teacher"]["model"], "task": args.task, "init": args.init,
                           "match": args.match, "seed": args.seed, **metrics["train"]}
    write_json(rd / MODELS[1] / MANIFEST, manifest)
    config = rd.config()
    config.update(args=asdict(args), steps_run=metrics["train"]["steps"])  # this (last) invocation's args
    write_json(rd / CONFIG, config)
    rd.write_metrics(metrics)


def print_distill(out: Path, console: Console) -> None:
    if rank_zero_only.rank != 0:  # DDP's other ranks write and print nothing
        return
    m = RunDir(out).metrics()
    t, s, tr = m["teacher"], m["student"], m["train"]
    table = Table(title=f"distill {m['task']} from {t['model']}  ({tr['steps']} steps × {tr['batch_size']}, "
                        f"lr {tr['lr']:g}, T {tr['temperature']:g})")
    for col in ("", "non-emb. params", "test acc.", "held-out acc.", "test KL to teacher"):
        table.add_column(col, justify="right")
    table.add_row("teacher", f"{t['non_embedding']:,}", f"{t['test_accuracy']:.1%}", f"{t['heldout_accuracy']:.1%}",
                  "0")
    if m["match"]:
        c = m["match"]
        held = c.get("circuit_heldout_accuracy")
        table.add_row("circuit", f"{c['circuit_non_embedding']:,}", f"{c['circuit_test_accuracy']:.1%}",
                      "" if held is None else f"{held:.1%}", f"{c['circuit_test_kl']:.4f}")
    table.add_row(f"student ({s['init']})", f"{s['non_embedding']:,}", f"{s['test_accuracy']:.1%}",
                  f"{s['heldout_accuracy']:.1%}",
                  f"{s['test_kl_to_teacher']:.4f} (init {s['test_kl_to_teacher_at_init']:.4f})")
    console.print(table)
    if "test_score" in s:
        console.print(f"{get_task(m['task']).score_name}, test / held-out (gain over another prompt's target): "
                      f"student {s['test_score']:.3f} / {s['heldout_score']:.3f} ({s['test_score_gain']:.3f} / "
                      f"{s['heldout_score_gain']:.3f}), teacher {t['test_score']:.3f} / {t['heldout_score']:.3f}")
    console.print(f"student {s['shape']}; {tr['steps']} steps, {tr['distinct_prompts']:,} distinct prompts, "
                  f"{tr['wall_s']:.1f} s; run: {out}")
