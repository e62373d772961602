"""Accuracy against build compute: circuits as points (after the search, after the fit), students as curves from
their validation logs (`bench.report.figures.plot_compute` draws them); and the sentence that reads them: who is
ahead at the circuit's compute, and at what multiple of it a student reaches the circuit's held-out accuracy."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.core.rundir import RunDir
from bench.report.curves import read_scalars
from bench.report.results import CKD, KD, MLPS, Measurement, TaskResult

TAGS = ("val/accuracy", "heldout/accuracy")


@dataclass(frozen=True)
class Curve:
    """A student's validation points against the MACs spent to reach them (its circuit's build first, for circuit +
    KD; then the pool; then the steps)."""

    run: Measurement
    macs: tuple[int, ...]
    val: tuple[float, ...]
    heldout: tuple[float, ...]


def student_curve(m: Measurement) -> Curve | None:
    """The curve of a distilled run that recorded its MACs; None otherwise. Every step costs the same (one prompt
    length), so step s has spent pool + train × s / steps."""
    if m.method not in (KD, CKD) or m.build_macs is None:
        return None
    train = RunDir(Path(m.run)).metrics()["train"]
    if train.get("macs") is None or not train["steps"]:
        return None
    base = m.build_macs - int(train["macs"]) + int(train["pool_macs"])  # the circuit's build, then the pool
    s = read_scalars(Path(m.run), TAGS)
    if not all(s.get(t) for t in TAGS):
        return None
    val, held = dict(s["val/accuracy"]), dict(s["heldout/accuracy"])
    steps = sorted(set(val) & set(held))
    per = int(train["train_macs"]) / int(train["steps"])
    return Curve(m, tuple(int(base + per * k) for k in steps), tuple(val[k] for k in steps),
                 tuple(held[k] for k in steps))


def circuit_points(m: Measurement) -> list[tuple[int, float, float]]:
    """(MACs, test accuracy, held-out accuracy) of a circuit after the search (where recorded) and after the fit."""
    out = []
    if "search_macs" in m.reported:
        out.append((m.reported["search_macs"], m.reported["search_test_accuracy"],
                    m.reported["search_heldout_accuracy"]))
    if m.build_macs is not None:
        out.append((m.build_macs, m.accuracy, m.heldout_accuracy))
    return out


def reach(circuit: Measurement, curve: Curve) -> tuple[float | None, float | None, float]:
    """(the student's held-out accuracy at the circuit's build MACs, or None if its curve starts later; the multiple
    of the circuit's MACs at which it first reaches the circuit's held-out accuracy, or None; the multiple at the
    end of its curve)."""
    at = [h for x, h in zip(curve.macs, curve.heldout) if x <= circuit.build_macs]
    first = next((x for x, h in zip(curve.macs, curve.heldout) if h >= circuit.heldout_accuracy), None)
    return (at[-1] if at else None, None if first is None else first / circuit.build_macs,
            curve.macs[-1] / circuit.build_macs)


def sentence(task: TaskResult) -> str:
    """Per seed, the heads + MLPs circuit against the random-init student of the same seed, on held-out accuracy."""
    circuits = {m.seed: m for m in task.measurements if m.method == MLPS and m.build_macs}
    curves = [c for c in map(student_curve, task.measurements) if c and c.run.method == KD and c.run.seed in circuits]
    if not curves:
        return ""
    parts, ahead = [], []
    for c in sorted(curves, key=lambda c: c.run.seed):
        circuit = circuits[c.run.seed]
        at, first, end = reach(circuit, c)
        if at is not None:
            ahead.append(circuit.heldout_accuracy - at)
        parts.append(f"seed {c.run.seed} at {first:.2g}× its circuit's build MACs" if first is not None else
                     f"seed {c.run.seed} not by {end:.2g}×, the end of its curve")
    lead = ""
    if ahead:
        gap = 100 * statistics.fmean(ahead)
        lead = (f"At the circuits' build compute, the heads + MLPs circuits are {abs(gap):.1f} pts "
                f"{'ahead of' if gap > 0 else 'behind'} the random-init students on the held-out templates. ")
    return (lead + "The students reach their circuit's held-out accuracy: " + "; ".join(parts) + ".")
