"""The figures of a comparison (matplotlib's object API on the Agg canvas: no pyplot, no global backend):
accuracy against build compute, accuracy against size, latency bars, and the students' training curves."""
from __future__ import annotations

from pathlib import Path

from bench.report.compute import circuit_points, student_curve
from bench.report.curves import read_scalars
from bench.report.results import CKD, FULL, HF, KD, METHODS, Row, TaskResult, batches


MARKERS = dict(zip(METHODS, "*oXsd^"))


def figure(width: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy(task: TaskResult, table: list[Row], path: Path) -> None:
    """Accuracy against non-embedding parameters: each method a series (its runs, and mean ± std when n >= 2)."""
    fig = figure(6.4)
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
    fig = figure(max(6.4, 1.3 * len(table) + 2))
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
    compute = f"accuracy-vs-compute-{task.task}.png"
    first = [compute] if plot_compute(task, table, directory / compute) else []
    names = [f"accuracy-vs-params-{task.task}.png", f"latency-{task.task}.png"]
    plot_accuracy(task, table, directory / names[0])
    plot_latency(task, table, directory / names[1])
    names = first + names
    curves = f"distillation-{task.task}.png"
    return names + ([curves] if plot_training(task, directory / curves) else [])


def plot_training(task: TaskResult, path: Path) -> bool:
    """Two panels: L_distill (log) and accuracy (solid: validation, dashed: held-out templates) against steps, one
    colour per method, one line per seed. False (and no file) when the task has no distilled run."""
    runs = [m for m in task.measurements if m.method in (KD, CKD)]
    curves = [(m, read_scalars(Path(m.run))) for m in runs]
    curves = [(m, s) for m, s in curves if s]
    if not curves:
        return False
    fig = figure(9.6)
    loss, acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = {KD: "C1", CKD: "C2"}
    for m, s in curves:
        label, color = f"{m.method}, seed {m.seed}", colors[m.method]
        if "train/l_distill" in s:
            loss.plot(*zip(*s["train/l_distill"]), color=color, alpha=0.8, label=label)
        for tag, style in (("val/accuracy", "-"), ("heldout/accuracy", "--")):
            if tag in s:
                steps, values = zip(*s[tag])
                acc.plot(steps, [100 * v for v in values], style, marker=".", color=color, alpha=0.8,
                         label=f"{label}, {tag.split('/')[0]}")
    loss.set_yscale("log")
    loss.set(xlabel="step", ylabel="train L_distill (log)", title=f"{task.task}: distillation loss")
    acc.set(xlabel="step", ylabel="accuracy (%): solid val, dashed held-out", title=f"{task.task}: accuracy")
    for ax in (loss, acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return True


def plot_compute(task: TaskResult, table: list[Row], path: Path) -> bool:
    """Held-out (solid) and validation (dashed) accuracy against build MACs (log): students' curves, circuits'
    points (a line from after the search to after the fit), the full model's held-out accuracy as a line. False
    (and no file) when nothing recorded its MACs."""
    curves = [c for c in map(student_curve, task.measurements) if c]
    points = [(m, circuit_points(m)) for m in task.measurements if m.method not in (FULL, KD, CKD)]
    points = [(m, p) for m, p in points if p]
    if not curves and not points:
        return False
    fig = figure(7.2)
    ax = fig.add_subplot()
    colors = {r.method: f"C{i}" for i, r in enumerate(table)}
    for c in curves:
        color = colors[c.run.method]
        ax.plot(c.macs, [100 * h for h in c.heldout], "-", color=color, alpha=0.8,
                label=f"{c.run.method}, seed {c.run.seed}")
        ax.plot(c.macs, [100 * v for v in c.val], "--", color=color, alpha=0.4)
    for m, p in points:
        xs, hs = [x for x, _, _ in p], [100 * h for _, _, h in p]
        ax.plot(xs, hs, "-", color=colors[m.method], alpha=0.5, marker=MARKERS[m.method],
                label=f"{m.method}, seed {m.seed}")
    full = next((r for r in table if r.method == FULL), None)
    if full is not None:
        ax.axhline(100 * full["heldout_accuracy"].mean, color="k", lw=1, ls=":", label="full model, held-out")
    ax.set_xscale("log")
    ax.set(xlabel="build compute (multiply-accumulates, log)",
           ylabel="accuracy (%): solid held-out templates, dashed validation",
           title=f"{task.task}: accuracy against build compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return True
