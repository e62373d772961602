"""Training curves of the distilled students in a comparison: L_distill and accuracy (validation split and
held-out templates) against steps, read back from each run's TensorBoard log."""
from __future__ import annotations

from pathlib import Path

from bench.report import CKD, KD, TaskResult, _figure

TAGS = ("train/l_distill", "val/accuracy", "heldout/accuracy")


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] for TAGS, from run/tb (every event file); tags the run never logged are absent."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run / "tb").is_dir():
        return {}
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    have = set(acc.Tags()["scalars"])
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in TAGS if t in have}


def plot_training(task: TaskResult, path: Path) -> bool:
    """Two panels: L_distill (log) and accuracy (solid: validation, dashed: held-out templates) against steps, one
    colour per method, one line per seed. False (and no file) when the task has no distilled run."""
    runs = [m for m in task.measurements if m.method in (KD, CKD)]
    curves = [(m, read_scalars(Path(m.run))) for m in runs]
    curves = [(m, s) for m, s in curves if s]
    if not curves:
        return False
    fig = _figure(9.6)
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
