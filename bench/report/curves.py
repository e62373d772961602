"""Training curves of the distilled students in a comparison: L_distill and accuracy (validation split and
held-out templates) against steps, read back from each run's TensorBoard log."""
from __future__ import annotations

from pathlib import Path

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
