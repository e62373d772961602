"""What `bench compare` measured: one Measurement per model and split, and per-method rows (mean ± std over
runs). The tables and figures read these."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.core.latency import Latency
from bench.core.metrics import worst

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
    build_macs: int | None = None  # the run's build, in MACs (bench/core/budget.py)
    generate: Latency | None = None  # generating 16 tokens at b=1 with the KV cache (None: per-position model)
    score: float = math.nan  # the task's own score (Task.score), where it has one, and its gain (metrics.scores)
    score_gain: float = math.nan
    heldout_score: float = math.nan
    heldout_score_gain: float = math.nan
    by_template: dict = field(default_factory=dict)  # accuracy per template of the test split, and the held-out one
    heldout_by_template: dict = field(default_factory=dict)
    offtemplate_accuracy: float = math.nan  # on the task's off-template phrasings (position-free models)
    offtemplate_kl_to_full: float = math.nan
    offtemplate_by_template: dict = field(default_factory=dict)
    offtemplate_score: float = math.nan
    offtemplate_score_gain: float = math.nan
    full_by_template: tuple[dict, dict, dict] = ({}, {}, {})  # the full model's, on the same splits

    def worst(self, split: str = "test") -> dict | None:
        """The template of the split ("test", "heldout" or "offtemplate") where it falls furthest under the full
        model."""
        i = ("test", "heldout", "offtemplate").index(split)
        mine = (self.by_template, self.heldout_by_template, self.offtemplate_by_template)[i]
        full = self.full_by_template[i] if len(self.full_by_template) > i else {}
        return worst(mine, full) if mine and full else None

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


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


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
    "build_macs": lambda m: m.build_macs,
    "generate_median_ms": lambda m: m.generate.median_ms if m.generate else None,
    "worst_delta_pts": lambda m: (m.worst() or {}).get("delta_pts"),
    "heldout_worst_delta_pts": lambda m: (m.worst("heldout") or {}).get("delta_pts"),
    "offtemplate_accuracy": lambda m: _finite(m.offtemplate_accuracy),
    "offtemplate_worst_delta_pts": lambda m: (m.worst("offtemplate") or {}).get("delta_pts"),
    "score": lambda m: _finite(m.score),
    "score_gain": lambda m: _finite(m.score_gain),
    "heldout_score": lambda m: _finite(m.heldout_score),
    "heldout_score_gain": lambda m: _finite(m.heldout_score_gain),
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


def batches(task: TaskResult) -> str:
    return "/".join(str(b) for b in sorted({m.latency.batch for m in task.measurements}))
