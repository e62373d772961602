"""`bench compare`: the full model, extracted circuits and distilled students of a task, measured again on the
runs' held-out test set: non-embedding parameters, accuracy, KL to the full model, latency and build cost."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text
from torch import nn

from bench.core import progress
from bench.core.latency import Latency, measure
from bench.core.metrics import accuracies, kl_to, scores
from bench.core.rundir import RunDir, check_out, publishing
from bench.report import tables as report
from bench.report.results import CKD, FULL, HF, CompareResult, Measurement, TaskResult
from bench.report.runs import Run, model_id, read_run, run_dirs
from models import loading
from models.ablation import no_means
from models.io import load_pruned
from models.pruned import PrunedModel, count_params
from models.generate import LogitsFn, cached_greedy, hf_greedy
from models.surgery import prune
from models.types import BenchError
from tasks import get_task
from tasks.data import Split, off_template_split

REPORTS = ("md",)
MIN_LATENCY_RUNS = 20
COMPILE_MODES = ("none", "default", "reduce-overhead")
WIDE = 260  # columns of the terminal table when the output is not a terminal


@dataclass
class CompareArgs:
    """Compare the full model, extracted circuits and distilled students of a task on one held-out test set.

    Args:
        task: a task (acronyms, greater-than, ioi), or all: every task that has runs.
        runs: run directories, or directories holding runs one level down (default: every run under runs/).
        model: only the runs of this model (default: the runs must all share one model).
        report: the report format: md (report.md, results.csv, runs.csv and PNG plots in --out).
        out: where the report goes (default results/compare-MODEL).
        overwrite: replace an existing non-empty --out.
        device: where every model is scored and timed: cpu, cuda, cuda:N or auto.
        dtype: float32 (default), bfloat16 or float16.
        latency_runs: timed forwards per model and batch size (at least 20), after the warm-up.
        warmup: untimed forwards per model and batch size first.
        hf_reference: also score and time the Hugging Face model itself, as a reference row.
        batch_size: prompts per forward for accuracy and KL, and the larger latency batch (b = the smaller of it
            and the test prompts; the other is b=1).
        compile: none (eager), default (torch.compile, inductor) or reduce-overhead (CUDA graphs), for the full and
            every pruned or distilled model alike; the HF reference stays eager. The warm-up covers compilation,
            and its time is in the report's warm-up column and runs.csv (warmup_s).
        n_offtemplate: prompts of each of the task's off-template phrasings, drawn with each run's seed, that every
            position-free model is scored on beside its test splits; 0: none.
    """

    task: str
    runs: list[str] | None = None
    model: str | None = None
    report: str = "md"
    out: str | None = None
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "float32"
    latency_runs: int = 20
    warmup: int = 3
    hf_reference: bool = True
    batch_size: int = 100
    compile: str = "none"
    n_offtemplate: int = 40

    def __post_init__(self) -> None:
        if self.task != "all":
            get_task(self.task)  # unknown task -> BenchError
        if isinstance(self.runs, str):
            self.runs = [self.runs]
        for r in self.runs or []:
            if not Path(r).is_dir():
                raise BenchError(f"--runs {r} is not a directory; give run directories or folders that hold them")
        if self.report not in REPORTS:
            raise BenchError(f"unknown --report {self.report!r}; use one of: {', '.join(REPORTS)}")
        if self.compile not in COMPILE_MODES:
            raise BenchError(f"unknown --compile {self.compile!r}; use one of: {', '.join(COMPILE_MODES)}")
        if self.batch_size < 1:
            raise BenchError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.latency_runs < MIN_LATENCY_RUNS:
            raise BenchError(f"--latency-runs must be >= {MIN_LATENCY_RUNS} (a p95 needs them), "
                             f"got {self.latency_runs}")
        if self.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {self.warmup}")
        if self.n_offtemplate < 0:
            raise BenchError(f"--n-offtemplate must be >= 0 (0: none), got {self.n_offtemplate}")
        loading.resolve_dtype(self.dtype)

    def out_dir(self, model: str) -> Path:
        return Path(self.out) if self.out else Path("results") / f"compare-{Path(model).name or model}"


# ---- gathering run directories -------------------------------------------------------------------------

def select(runs: list[Run], args: CompareArgs, where: str) -> dict[str, list[Run]]:
    """The runs of each task compared, checked: one model, at least one run per task, no duplicates."""
    if args.model:
        found = sorted({r.model for r in runs})
        runs = [r for r in runs if r.model == model_id(args.model)]
        if not runs:
            raise BenchError(f"no runs of --model {args.model} in {where} (they are of: {', '.join(found)})")
    tasks = sorted({r.task for r in runs}) if args.task == "all" else [args.task]
    by_task = {t: [r for r in runs if r.task == t] for t in tasks}
    for t, rs in by_task.items():
        if not rs:
            raise BenchError(f"no runs of task {t} in {where}; run `bench extract --task {t}` first, or pass --runs")
    models = Counter(r.model for rs in by_task.values() for r in rs)
    if len(models) > 1:
        mix = ", ".join(f"{m} ({n} runs)" for m, n in models.most_common())
        raise BenchError(f"the runs mix models: {mix}; pick one with --model, or pass --runs of one model")
    seen: dict[tuple, Path] = {}
    for r in (r for rs in by_task.values() for r in rs):
        key = (r.task, r.method, r.settings, r.seed)
        if key in seen:
            raise BenchError(f"{seen[key]} and {r.path} are the same method, settings and seed; leave one out "
                             "of --runs")
        seen[key] = r.path
    return by_task


# ---- measuring -----------------------------------------------------------------------------------------

class HFLast(nn.Module):
    """The Hugging Face model behind the `model(ids, last_only=True)` interface the latency measurer calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, last_only: bool = True) -> torch.Tensor:
        return self.model(ids, logits_to_keep=1).logits[:, -1]


def full_model(hf: nn.Module) -> PrunedModel:
    """The full model as a PrunedModel with nothing removed (no constants), covering its whole context."""
    return prune(hf, (), no_means())


@dataclass
class Bench:
    """What every measurement of one comparison shares."""

    args: CompareArgs
    device: torch.device
    dtype: torch.dtype
    tokenizer: object
    full: PrunedModel
    hf: HFLast | None
    start: float = field(default_factory=time.perf_counter)

    def said(self, what: str) -> None:
        """One flushed line on stderr as each model's measuring starts: on a CPU a comparison takes hours."""
        minutes, seconds = divmod(int(time.perf_counter() - self.start), 60)
        progress.line(f"[{minutes}:{seconds:02d}] compare {what}", Console(stderr=True))


@dataclass(frozen=True)
class TestSplits:
    """A run's test split (training templates) and test-heldout split (held-out templates)."""

    test: Split
    heldout: Split
    off: Split | None = None  # prompts of the task's off-template phrasings, drawn with the run's seed

    @property
    def digest(self) -> str:
        data = json.dumps([[[list(e.input_ids), e.target] for e in s.examples] for s in (self.test, self.heldout)])
        return hashlib.sha256(data.encode()).hexdigest()[:10]


def read_test_splits(run: Run, vocab: int, tokenizer, n_off: int) -> TestSplits:
    off = off_template_split(get_task(run.task), tokenizer, n_off, run.seed) if n_off else None
    splits = TestSplits(*(RunDir(run.path).split(n) for n in ("test", "test-heldout")), off)
    for split in (splits.test, splits.heldout):
        if max(max(e.input_ids) for e in split.examples) >= vocab:
            raise BenchError(f"{run.path}'s {split.name} split holds token ids beyond {run.model}'s vocabulary")
    return splits


def score(model: nn.Module, task: str, splits: TestSplits, ref: LogitsFn | None, b: Bench,
          compile_it: bool = True) -> dict:
    """Latency at b = min(--batch-size, test prompts) and at b=1 on the test split (first: its warm-up holds the
    compilation under --compile), then accuracy and KL to the full model `ref` (0 for the full model itself) on both
    test splits, in batches of --batch-size."""
    eager, model = model, deployed(model, b.args.compile if compile_it else "none")
    fn = lambda ids: model(ids.to(b.device), last_only=True)  # noqa: E731
    ids, runs, warmup, bs = splits.test.input_ids, b.args.latency_runs, b.args.warmup, b.args.batch_size
    out = {"latency": measure(model, ids[:bs], runs, warmup), "latency_b1": measure(model, ids[:1], runs, warmup),
           "generate": generation(eager, ids[:1], runs, warmup)}
    free = not (isinstance(eager, PrunedModel) and eager.cfg.positional)  # takes the off-template lengths
    off = splits.off if free else None
    for prefix, split in (("", splits.test), ("heldout_", splits.heldout), ("offtemplate_", off)):
        if split is None:
            continue
        out[f"{prefix}kl_to_full"] = 0.0 if ref is None else kl_to(ref, fn, split, bs)
        out[f"{prefix}accuracy"], out[f"{prefix}by_template"] = accuracies(get_task(task), b.tokenizer, fn, split, bs)
        out.update({f"{prefix}{k}": v for k, v in (scores(get_task(task), b.tokenizer, fn, split, bs) or {}).items()})
    return out


GENERATE = 16  # new tokens of the generation latency


def generation(model: nn.Module, ids: torch.Tensor, runs: int, warmup: int) -> Latency | None:
    """Latency of generating GENERATE greedy tokens at b=1, eager, with the KV cache: ours (`cached_greedy`) or the
    Hugging Face model's own generate(); None for a per-position model, which takes no longer input."""
    if isinstance(model, HFLast):
        return measure(model, ids, runs, warmup, call=lambda m, x: hf_greedy(m.model, x, GENERATE))
    if model.cfg.positional:
        return None
    return measure(model, ids, runs, warmup, call=lambda m, x: cached_greedy(m, x, GENERATE))


def deployed(model: nn.Module, mode: str) -> nn.Module:
    """The model as a deployer runs it: eager (`none`) or torch.compile'd in `mode` (default: inductor;
    reduce-overhead: CUDA graphs on a GPU). Compilation happens at the first call of each input shape."""
    return model if mode == "none" else torch.compile(model, mode=mode, dynamic=False)


def load_run_model(run: Run, b: Bench) -> PrunedModel:
    model, _ = load_pruned(run.weights, device=b.device, dtype=b.dtype)
    mine, full = model.cfg, b.full.cfg
    if (mine.family, mine.d_model, mine.vocab_size) != (full.family, full.d_model, full.vocab_size):
        raise BenchError(f"{run.weights} is not a model of {run.model}; leave {run.path} out of --runs")
    return model


def measure_full(task: str, splits: TestSplits, b: Bench) -> tuple[list[Measurement], LogitsFn]:
    """The full model (and the HF reference) on one pair of test splits; also the full model's logits function,
    for the KLs (recomputed per batch: memory stays bounded by the batch, not the test set)."""
    ref = lambda ids: b.full(ids.to(b.device), last_only=True)  # noqa: E731
    params = count_params(b.full)["non_embedding"]
    s = score(b.full, task, splits, None, b)
    common = dict(task=task, settings="", run="", seed=None, split=splits.digest, n_test=len(splits.test),
                  non_embedding=params, full_non_embedding=params, full_accuracy=s["accuracy"],
                  full_heldout_accuracy=s["heldout_accuracy"], full_latency_ms=s["latency"].median_ms,
                  full_latency_b1_ms=s["latency_b1"].median_ms)
    out = [Measurement(method=FULL, **common, **s)]
    if b.hf is not None:
        out.append(Measurement(method=HF, **common, **score(b.hf, task, splits, ref, b, compile_it=False)))
    return out, ref


def measure_run(r: Run, splits: TestSplits, full: Measurement, ref: LogitsFn, b: Bench) -> Measurement:
    """One run's model on its test splits, against the full model's numbers `full` and logits `ref` there."""
    model = load_run_model(r, b)
    return Measurement(r.task, r.method, r.settings, str(r.path), r.seed, full.split, len(splits.test),
                       count_params(model)["non_embedding"], **score(model, r.task, splits, ref, b),
                       full_non_embedding=full.non_embedding, full_accuracy=full.accuracy, search_s=r.search_s,
                       train_s=r.train_s, build_macs=r.build_macs, reported=r.reported, full_by_template=(
                           full.by_template, full.heldout_by_template, full.offtemplate_by_template),
                       full_latency_ms=full.latency.median_ms,
                       full_latency_b1_ms=full.latency_b1.median_ms, full_heldout_accuracy=full.heldout_accuracy)


def measure_task(task: str, runs: list[Run], b: Bench) -> TaskResult:
    """Every run on its test split, against the full model (and the HF reference) on each distinct split."""
    splits = {r.path: read_test_splits(r, b.full.cfg.vocab_size, b.tokenizer, b.args.n_offtemplate) for r in runs}
    digests = {r.path: splits[r.path].digest for r in runs}
    fulls: list[Measurement] = []
    full: dict[str, tuple[Measurement, LogitsFn]] = {}
    for r in runs:
        if digests[r.path] not in full:
            b.said(f"{task}: the full model on the test splits of {r.path}")
            rows, ref = measure_full(task, splits[r.path], b)
            full[digests[r.path]] = (rows[0], ref)
            fulls += rows
    measured: list[Measurement] = []
    for i, r in enumerate(runs, 1):
        b.said(f"{task}: run {i}/{len(runs)}, {r.path}")
        measured.append(measure_run(r, splits[r.path], *full[digests[r.path]], b))
    seeds = {d: sorted({r.seed for r in runs if digests[r.path] == d}) for d in full}
    return TaskResult(task, fulls + measured, seeds, notes(runs))


def notes(runs: list[Run]) -> list[str]:
    gone = [r for r in runs if r.method == CKD and r.search_s is None]
    return [f"The extraction run of {r.path} is gone, so its build cost is the training time only." for r in gone]


# ---- the verb ------------------------------------------------------------------------------------------

def command_line(args: CompareArgs, out: Path) -> str:
    """The command, every setting spelled out, that reproduces this report."""
    argv = ["bench", "compare", "--task", args.task, *(["--runs", *args.runs] if args.runs else []),
            *(["--model", args.model] if args.model else []), "--report", args.report, "--out", str(out),
            "--device", args.device, "--dtype", args.dtype, "--latency-runs", str(args.latency_runs),
            "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--compile", args.compile,
            "--n-offtemplate", str(args.n_offtemplate), "--hf-reference" if args.hf_reference else "--no-hf-reference"]
    return shlex.join(argv + (["--overwrite"] if args.overwrite else []))


def cpu_load(device: torch.device) -> str:
    """The machine's load on CPU (other processes slow CPU timings down); empty on a GPU."""
    if device.type != "cpu" or not hasattr(os, "getloadavg"):
        return ""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def environment(b: Bench, tasks: list[TaskResult], load: str) -> dict:
    import transformers

    lat = tasks[0].measurements[0].latency
    return {"device": lat.device, "dtype": lat.dtype, "torch": lat.torch, "transformers": transformers.__version__,
            "latency_runs": b.args.latency_runs, "warmup": b.args.warmup, "load": load, "compile": b.args.compile,
            "timer": "CUDA events" if b.device.type == "cuda" else "time.perf_counter_ns"}


def compare(args: CompareArgs) -> CompareResult:
    """Run `bench compare`; the report is published into --out only when it is complete."""
    where = ", ".join(args.runs) if args.runs else "runs/"
    runs = [r for r in (read_run(p, args.task) for p in run_dirs(args.runs)) if r is not None]
    by_task = select(runs, args, where)
    model = next(r.model for rs in by_task.values() for r in rs)
    out = args.out_dir(model)
    check_out(out, args.overwrite)  # before the slow parts
    device, dtype = loading.resolve_device(args.device), loading.resolve_dtype(args.dtype)
    hf, tokenizer = loading.load_model(model, device=device, dtype=dtype)
    b = Bench(args, device, dtype, tokenizer, full_model(hf), HFLast(hf) if args.hf_reference else None)
    load = cpu_load(device)
    tasks = [measure_task(t, rs, b) for t, rs in by_task.items()]
    result = CompareResult(out, model, command_line(args, out), environment(b, tasks, load), tasks)
    with publishing(out, args.overwrite) as partial:
        report.write(result, partial)
    return result


def print_compare(result: CompareResult, console: Console) -> None:
    """One rich table per task, then where the report is. Logs and pipes (not a terminal) get wide lines, not
    wrapped cells."""
    if not console.is_terminal and console.width < WIDE:
        console.width = WIDE
    for task in result.tasks:
        table = Table(title=f"{task.task} on {result.model}  ({result.env['device']}, {result.env['dtype']})")
        rows = report.rows(task)
        s = report.scored(rows)
        for i, col in enumerate(report.header(task, short=True, with_score=s)):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*map(Text, report.cells(row, s, short=True)))
        console.print(table)
        if not task.shared:
            console.print(f"note: the {task.task} runs do not share one test set; each is scored on its own split")
    console.print(f"report: {result.out / 'report.md'}")

