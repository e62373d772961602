"""Training curves of the distilled students in a comparison: L_distill and accuracy (validation split and
held-out templates) against steps, read back from each run's TensorBoard log."""
from __future__ import annotations

from pathlib import Path

from bench.report import CKD, KD, TaskResult, _figure

TAGS = ("train/l_distill", "val/accuracy", "heldout/accuracy")


def event_files(tb: Path) -> list[Path]:
    """A run's TensorBoard event files in the order they were written. Each Lightning fit closes its writer, so a
    run can have several (search, fit, final metrics); by name, ".10" would come before ".9" when both are stamped
    the same second, and TensorBoard then drops the earlier file's later steps as orphans."""
    def written(f: Path) -> tuple:  # events.out.tfevents.<time>.<host>.<pid>.<counter>
        parts = f.name.split(".")
        return (int(parts[3]), int(parts[-1])) if parts[3].isdigit() and parts[-1].isdigit() else (0, 0, f.name)
    return sorted(tb.glob("events.out.tfevents.*"), key=written)


def read_scalars(run: Path, tags: tuple[str, ...] | None = TAGS) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] for `tags` (None: every tag), from run/tb, every event file in the order written; tags
    the run never logged are absent."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in event_files(run / "tb") if (run / "tb").is_dir() else []:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for t in acc.Tags()["scalars"]:
            if tags is None or t in tags:
                out.setdefault(t, []).extend((e.step, e.value) for e in acc.Scalars(t))
    return out


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
