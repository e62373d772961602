"""What `bench compare` measured, and how it is written: per-method rows (mean ± std over runs), the markdown
report in the manner of the paper's Table 1 with a paragraph that reads the numbers, CSV files and PNG plots."""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.latency import Latency

FULL, HF = "full model", "full model (HF reference)"
MLPS, HEADS = "circuit (heads + MLPs)", "circuit (heads only)"
KD, CKD = "distilled (random init)", "circuit + KD"
METHODS = (FULL, HF, MLPS, HEADS, KD, CKD)
REFERENCES = (FULL, HF)  # the unreduced model; every other method is "reduced"


@dataclass
class Measurement:
    """One model scored on one test split: a run's pruned model or student, or the full model."""

    task: str
    method: str
    settings: str  # what replicates of a method share (alpha, ablation, steps, ...)
    run: str  # the run directory; "" for the full model
    seed: int | None
    split: str  # short digest of the test split it was scored on
    n_test: int
    non_embedding: int
    accuracy: float
    kl_to_full: float
    latency: Latency  # batch = the whole test split
    latency_b1: Latency
    full_non_embedding: int
    full_accuracy: float  # the full model on the same split
    search_s: float | None = None
    train_s: float | None = None
    reported: dict = field(default_factory=dict)  # what the run's own metrics.json says
    full_latency_ms: float = math.nan  # the full model's median latencies on the same split
    full_latency_b1_ms: float = math.nan
    heldout_accuracy: float = math.nan  # on the run's test-heldout split (held-out templates)
    heldout_kl_to_full: float = math.nan
    full_heldout_accuracy: float = math.nan

    @property
    def params_delta_pct(self) -> float:
        return 100 * (self.non_embedding / self.full_non_embedding - 1)

    @property
    def latency_delta_pct(self) -> float:
        return 100 * (self.latency.median_ms / self.full_latency_ms - 1)

    @property
    def latency_b1_delta_pct(self) -> float:
        return 100 * (self.latency_b1.median_ms / self.full_latency_b1_ms - 1)

    @property
    def accuracy_delta_pts(self) -> float:
        return 100 * (self.accuracy - self.full_accuracy)

    @property
    def heldout_accuracy_delta_pts(self) -> float:
        return 100 * (self.heldout_accuracy - self.full_heldout_accuracy)

    @property
    def build_s(self) -> float | None:
        parts = [s for s in (self.search_s, self.train_s) if s is not None]
        return sum(parts) if parts else None


@dataclass
class TaskResult:
    task: str
    measurements: list[Measurement]
    splits: dict[str, list[int | None]]  # split digest -> the seeds of the runs scored on it
    notes: list[str] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        return len(self.splits) == 1


@dataclass
class CompareResult:
    out: Path
    model: str
    command: str
    env: dict  # device, dtype, torch, transformers, latency_runs, warmup
    tasks: list[TaskResult]


# ---- rows: one per method (and settings), mean ± std over its runs -------------------------------------

@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # None for a single value
    n: int


def stat(values: list[float | None]) -> Stat | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


METRICS: dict[str, Callable[[Measurement], float | None]] = {
    "non_embedding": lambda m: m.non_embedding,
    "params_delta_pct": lambda m: m.params_delta_pct,
    "accuracy": lambda m: m.accuracy,
    "accuracy_delta_pts": lambda m: m.accuracy_delta_pts,
    "kl_to_full": lambda m: m.kl_to_full,
    "heldout_accuracy": lambda m: m.heldout_accuracy,
    "heldout_accuracy_delta_pts": lambda m: m.heldout_accuracy_delta_pts,
    "heldout_kl_to_full": lambda m: m.heldout_kl_to_full,
    "latency_median_ms": lambda m: m.latency.median_ms,
    "latency_p95_ms": lambda m: m.latency.p95_ms,
    "latency_b1_median_ms": lambda m: m.latency_b1.median_ms,
    "latency_b1_p95_ms": lambda m: m.latency_b1.p95_ms,
    "latency_delta_pct": lambda m: m.latency_delta_pct,
    "latency_b1_delta_pct": lambda m: m.latency_b1_delta_pct,
    "search_s": lambda m: m.search_s,
    "train_s": lambda m: m.train_s,
    "build_s": lambda m: m.build_s,
    "warmup_s": lambda m: m.latency.warmup_s + m.latency_b1.warmup_s,  # compilation and graph capture included
}


@dataclass
class Row:
    method: str
    label: str
    settings: str
    runs: list[Measurement]

    def __getitem__(self, metric: str) -> Stat | None:
        return stat([METRICS[metric](m) for m in self.runs])

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def reduced(self) -> bool:
        return self.method not in REFERENCES


def rows(task: TaskResult) -> list[Row]:
    """One row per (method, settings), in METHODS order; the label names the settings only when a method
    has several in this task."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in task.measurements:
        groups.setdefault((m.method, m.settings), []).append(m)
    several = {method for method, _ in groups if sum(k[0] == method for k in groups) > 1}
    keys = sorted(groups, key=lambda k: (METHODS.index(k[0]), k[1]))
    return [Row(meth, f"{meth} [{s}]" if meth in several else meth, s, groups[(meth, s)]) for meth, s in keys]


# ---- formatting ----------------------------------------------------------------------------------------

def pm(s: Stat | None, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    if s is None:
        return "—"
    text = format(s.mean * scale, spec)
    return text + (f" ± {format(s.std * scale, spec.lstrip('+'))}" if s.std is not None else "") + suffix


def small(x: float) -> str:
    return "0" if x == 0 else (f"{x:.4f}" if abs(x) >= 1e-3 else f"{x:.1e}")


def batches(task: TaskResult) -> str:
    return "/".join(str(b) for b in sorted({m.latency.batch for m in task.measurements}))


HEADER = ("method", "n", "non-emb params (Δ%)", "accuracy (Δ pts)", "held-out accuracy (Δ pts)", "KL to full",
          "held-out KL", "latency b={b} ms median (p95)", "latency b=1 ms median (p95)", "build cost s",
          "warm-up s (compile)")


def cells(row: Row) -> list[str]:
    """The table cells of one row (markdown and the terminal table share them)."""
    params = pm(row["non_embedding"], ",.0f") + (f" ({pm(row['params_delta_pct'], '+.1f', suffix='%')})"
                                                  if row.reduced else "")
    acc, held = (pm(row[k], ".1f", 100, "%") + (f" ({pm(row[k + '_delta_pts'], '+.1f')})" if row.method != FULL else "")
                 for k in ("accuracy", "heldout_accuracy"))
    kl_text, held_kl = (small(s.mean) + (f" ± {small(s.std)}" if s.std is not None else "")
                        for s in (row["kl_to_full"], row["heldout_kl_to_full"]))
    lat = [f"{pm(row[k + '_median_ms'], '.2f')} ({pm(row[k + '_p95_ms'], '.2f')})"
           + (f", {pm(row[k + '_delta_pct'], '+.1f', suffix='%')}" if row.reduced else "") for k in ("latency", "latency_b1")]
    return [row.label, str(row.n), params, acc, held, kl_text, held_kl, *lat, pm(row["build_s"], ".3g"),
            pm(row["warmup_s"], ".3g")]


SHORT = ("method", "n", "params (Δ%)", "accuracy (Δ pts)", "held-out (Δ pts)", "KL", "held-out KL", "b={b} ms (p95)",
         "b=1 ms (p95)", "build s", "warm-up s")


def header(task: TaskResult, short: bool = False) -> list[str]:
    """The table's column names; `short` ones for a terminal."""
    return [h.format(b=batches(task)) for h in (SHORT if short else HEADER)]


# ---- the paragraph that reads the numbers --------------------------------------------------------------

def _cut(row: Row, metric: str, full: Row) -> float:
    return 100 * (1 - row[metric].mean / full[metric].mean)


def summary(task: TaskResult, table: list[Row]) -> str:
    full = next(r for r in table if r.method == FULL)
    reduced = [r for r in table if r.reduced]
    if not reduced:
        return f"Only the full model was measured on {task.task}."
    fp, fa = full["non_embedding"].mean, full["accuracy"].mean
    smallest = min(reduced, key=lambda r: r["non_embedding"].mean)
    best = max(reduced, key=lambda r: (r["accuracy"].mean, -r["non_embedding"].mean))
    out = [f"The smallest model is {smallest.label} with {smallest['non_embedding'].mean:,.0f} non-embedding "
           f"parameters, {_cut(smallest, 'non_embedding', full):.1f}% fewer than the full model's {fp:,.0f}; it scores "
           f"{smallest['accuracy'].mean:.1%} against {fa:.1%} ({smallest['accuracy_delta_pts'].mean:+.1f} pts) at a "
           f"KL of {small(smallest['kl_to_full'].mean)} to the full model. On the held-out templates it scores "
           f"{smallest['heldout_accuracy'].mean:.1%} against {full['heldout_accuracy'].mean:.1%} "
           f"({smallest['heldout_accuracy_delta_pts'].mean:+.1f} pts)."]
    if best is not smallest:
        out.append(f"The most accurate reduced model is {best.label} at {best['accuracy'].mean:.1%} "
                   f"({best['accuracy_delta_pts'].mean:+.1f} pts; held-out templates "
                   f"{best['heldout_accuracy_delta_pts'].mean:+.1f} pts) with {_cut(best, 'non_embedding', full):.1f}% "
                   "fewer parameters.")
    closest = min(reduced, key=lambda r: r["kl_to_full"].mean)
    if len(reduced) > 1:
        out.append(f"The lowest KL to the full model is {closest.label}'s ({small(closest['kl_to_full'].mean)}).")
    out += [s for s in (_versus(reduced), _latency(reduced, batches(task)), _hf(table, full)) if s]
    return " ".join(out)


def _versus(reduced: list[Row]) -> str:
    """The best circuit against the best student distilled from scratch (the paper's comparison), then what
    fine-tuning a circuit with KD changed."""
    best = lambda rs: max(rs, key=lambda r: r["accuracy"].mean) if rs else None  # noqa: E731
    circuit = best([r for r in reduced if r.method in (MLPS, HEADS)])
    student, tuned = best([r for r in reduced if r.method == KD]), best([r for r in reduced if r.method == CKD])
    out = []
    if circuit and student:
        gap = 100 * (circuit["accuracy"].mean - student["accuracy"].mean)
        how = ("as accurate as" if abs(gap) < 0.05 else
               f"{abs(gap):.1f} pts {'more' if gap > 0 else 'less'} accurate than")
        cb, sb = circuit["build_s"], student["build_s"]
        out.append(f"Against distillation, {circuit.label} is {how} {student.label} ({circuit['accuracy'].mean:.1%} vs "
                   f"{student['accuracy'].mean:.1%}; held-out templates {circuit['heldout_accuracy'].mean:.1%} vs "
                   f"{student['heldout_accuracy'].mean:.1%}; KL {small(circuit['kl_to_full'].mean)} vs "
                   f"{small(student['kl_to_full'].mean)}) at {circuit['non_embedding'].mean:,.0f} vs "
                   f"{student['non_embedding'].mean:,.0f} parameters"
                   + (f", and took {cb.mean:.3g} s to build against {sb.mean:.3g} s." if cb and sb else "."))
    if circuit and tuned:
        out.append(f"Fine-tuning circuits with KD ({tuned.label}) reaches {tuned['accuracy'].mean:.1%} at KL "
                   f"{small(tuned['kl_to_full'].mean)}, against {circuit['accuracy'].mean:.1%} at KL "
                   f"{small(circuit['kl_to_full'].mean)} for {circuit.label}.")
    return " ".join(out)


def _latency(reduced: list[Row], b: str) -> str:
    """Latency change against parameter change for every reduced row, then whether latency keeps up."""
    parts, smaller = [], []
    for r in reduced:
        p, lat, lat1 = (r[k] for k in ("params_delta_pct", "latency_delta_pct", "latency_b1_delta_pct"))
        parts.append(f"{r.label} {pm(p, '+.1f', suffix='%')} parameters, {pm(lat, '+.1f', suffix='%')} median "
                     f"latency at b={b} ({pm(lat1, '+.1f', suffix='%')} at b=1)")
        smaller.append(lat.mean > p.mean)  # both negative: a smaller cut is the larger delta
    verdict = ("the latency cut is smaller than the parameter cut for every reduced model" if all(smaller) else
               "the latency cut is larger than the parameter cut for every reduced model" if not any(smaller) else
               "the latency cut is smaller than the parameter cut for "
               + ", ".join(r.label for r, s in zip(reduced, smaller) if s) + " and larger for the others")
    return "Against the full model: " + "; ".join(parts) + f". At b={b}, {verdict}."


def _hf(table: list[Row], full: Row) -> str:
    hf = next((r for r in table if r.method == HF), None)
    if hf is None:
        return ""
    return (f"As a check, the full model as a PrunedModel matches the Hugging Face model (KL "
            f"{small(hf['kl_to_full'].mean)}, accuracy {hf['accuracy'].mean:.1%}); at b={full.runs[0].latency.batch} "
            f"they take {full['latency_median_ms'].mean:.2f} ms and {hf['latency_median_ms'].mean:.2f} ms.")


# ---- plots (matplotlib's object API on the Agg canvas: no pyplot, no global backend) ---------------------

MARKERS = dict(zip(METHODS, "*oXsd^"))


def _figure(width: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy(task: TaskResult, table: list[Row], path: Path) -> None:
    """Accuracy against non-embedding parameters: each method a series (its runs, and mean ± std when n >= 2)."""
    fig = _figure(6.4)
    ax = fig.add_subplot()
    for i, r in enumerate(table):
        color = f"C{i}"
        xs, ys = [m.non_embedding for m in r.runs], [100 * m.accuracy for m in r.runs]
        ring = r.method == HF  # a ring around the full model's star: both sit on the same point
        ax.scatter(xs, ys, marker=MARKERS[r.method], alpha=0.5 if r.n > 1 else 1.0, label=r.label,
                   s=260 if ring else 70, facecolors="none" if ring else color, edgecolors=color,
                   zorder=1 if ring else 2)
        ax.scatter(xs, [100 * m.heldout_accuracy for m in r.runs], marker=MARKERS[r.method], s=40,
                   facecolors="none", edgecolors=color, linewidths=1, zorder=2)
        if r.n > 1:
            p, a = r["non_embedding"], r["accuracy"]
            ax.errorbar(p.mean, 100 * a.mean, xerr=p.std, yerr=100 * a.std, color=color, capsize=3,
                        marker=MARKERS[r.method], markersize=9)
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters (log)")
    ax.set_ylabel("accuracy (%): filled test, hollow held-out templates")
    ax.set_title(f"{task.task}: accuracy vs size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def plot_latency(task: TaskResult, table: list[Row], path: Path) -> None:
    """Median latency bars (error bars: std over runs) at batch = the test set and at batch 1."""
    fig = _figure(max(6.4, 1.3 * len(table) + 2))
    for j, (key, b) in enumerate((("latency", batches(task)), ("latency_b1", "1"))):
        ax = fig.add_subplot(1, 2, j + 1)
        stats = [r[f"{key}_median_ms"] for r in table]
        ax.bar(range(len(table)), [s.mean for s in stats], yerr=[s.std or 0 for s in stats], capsize=3,
               color=[f"C{i}" for i in range(len(table))])
        ax.set_xticks(range(len(table)), [r.label for r in table], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{task.task}, batch {b}")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)


def plot_task(task: TaskResult, table: list[Row], directory: Path) -> list[str]:
    from bench.curves import plot_training

    names = [f"accuracy-vs-params-{task.task}.png", f"latency-{task.task}.png"]
    plot_accuracy(task, table, directory / names[0])
    plot_latency(task, table, directory / names[1])
    curves = f"distillation-{task.task}.png"
    return names + ([curves] if plot_training(task, directory / curves) else [])


# ---- files ---------------------------------------------------------------------------------------------

def compiled(mode: str) -> str:
    if mode == "none":
        return "eager"
    return (f"models compiled with torch.compile(mode={mode!r}) (the HF reference eager; the warm-up column holds "
            "each model's warm-up, compilation included)")


def markdown(result: CompareResult, plots: dict[str, list[str]]) -> str:
    e = result.env
    lines = [f"# Circuits vs distillation — {result.model}", "", f"Command: `{result.command}`", "",
             f"Device: {e['device']}; dtype {e['dtype']}; torch {e['torch']}; transformers {e['transformers']}"
             + (f"; {e['load']} when the comparison started" if e.get("load") else "") + ". "
             f"Latency: median (p95) of {e['latency_runs']} timed forwards after {e['warmup']} warm-up, "
             f"{compiled(e.get('compile', 'none'))}, under "
             f"inference_mode, {e['timer']}; every model returns last-position logits through the same PrunedModel "
             "code path (the full model is the PrunedModel with nothing removed). Accuracy and KL (to that full "
             "model, next-token distribution at the last position) are on the runs' test split (prompts of the "
             "training templates that the search never saw) and on their held-out split (templates the search never "
             "saw).", ""]
    for task in result.tasks:
        lines += task_section(task, plots.get(task.task, []))
    return "\n".join(lines) + "\n"


def task_section(task: TaskResult, plots: list[str]) -> list[str]:
    table = rows(task)
    m0 = task.measurements[0]
    where = (f"one test split of {m0.n_test} prompts × {m0.latency.seq_len} tokens, shared by every run" if task.shared
             else f"the runs do not share one test set ({len(task.splits)} test splits, of the runs of seeds "
                  + "; ".join(", ".join(map(str, s)) for s in task.splits.values()) + "); each run is scored on its "
                  "own test split and compared with the full model on that split; the full model's row is over the "
                  "splits")
    lines = [f"## {task.task}", "", f"Test set: {where}.", "",
             "| " + " | ".join(header(task)) + " |", "| --- |" + " ---: |" * (len(HEADER) - 1)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in table]
    seeds = lambda r: ", ".join(str(m.seed) for m in r.runs)  # noqa: E731
    lines += ["", "Settings: " + "; ".join(f"{r.label}: {r.settings} (n={r.n}, seeds {seeds(r)})"
                                           for r in table if r.reduced) + ".",
              "n: runs of the method (full model: test splits); mean ± std where n ≥ 2, the single value otherwise. "
              "Build cost: Algorithm 1's search wall time for circuits (and the fit of their constants), the "
              "training wall time (and a teacher pool's "
              "forward) for students, both for "
              "circuit + KD (as each run recorded it, on its own device). Warm-up: the untimed forwards before the "
              "timed ones at both batch sizes, compilation and graph capture included when compiled: a deployer's "
              "one-time cost.", *task.notes, "", summary(task, table), ""]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    return lines


RUN_COLUMNS = ("task", "method", "settings", "run", "seed", "split", "n_test", *METRICS, "batch", "seq_len",
               "device", "dtype", "torch", "reported_non_embedding", "reported_accuracy", "reported_kl")


def run_record(m: Measurement) -> dict:
    lat = m.latency
    return {"task": m.task, "method": m.method, "settings": m.settings, "run": m.run, "seed": m.seed, "split": m.split,
            "n_test": m.n_test, **{k: fn(m) for k, fn in METRICS.items()}, "batch": lat.batch, "seq_len": lat.seq_len,
            "device": lat.device, "dtype": lat.dtype, "torch": lat.torch,
            **{f"reported_{k}": m.reported.get(k) for k in ("non_embedding", "accuracy", "kl")}}


RESULT_COLUMNS = ("task", "method", "settings", "n", "seeds",
                  *(f"{k}_{s}" for k in METRICS for s in ("mean", "std")),
                  "batch", "seq_len", "device", "dtype", "torch")


def row_record(task: TaskResult, row: Row) -> dict:
    lat = row.runs[0].latency
    rec = {"task": task.task, "method": row.method, "settings": row.settings, "n": row.n,
           "seeds": " ".join(str(m.seed) for m in row.runs if m.seed is not None), "batch": batches(task),
           "seq_len": lat.seq_len, "device": lat.device, "dtype": lat.dtype, "torch": lat.torch}
    for k in METRICS:
        s = row[k]
        rec[f"{k}_mean"], rec[f"{k}_std"] = (s.mean, s.std) if s else (None, None)
    return rec


def write_csv(path: Path, columns: tuple[str, ...], records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in records:
            w.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in r.items()})


def write(result: CompareResult, directory: Path) -> list[Path]:
    """report.md, results.csv (the table's numbers), runs.csv (every run) and the plots; returns the files."""
    plots = {t.task: plot_task(t, rows(t), directory) for t in result.tasks}
    write_csv(directory / "results.csv", RESULT_COLUMNS, [row_record(t, r) for t in result.tasks for r in rows(t)])
    write_csv(directory / "runs.csv", RUN_COLUMNS, [run_record(m) for t in result.tasks for m in t.measurements])
    (directory / "report.md").write_text(markdown(result, plots))
    return sorted(directory.iterdir())
