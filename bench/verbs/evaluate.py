"""`bench evaluate`: reload a run's standalone pruned model and score it on the run's own test split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bench.core.metrics import accuracy, prefixed, scores
from bench.core.rundir import RunDir
from models import loading
from models.io import load_pruned
from models.types import BenchError, Circuit
from tasks import get_task


@dataclass
class EvaluateArgs:
    """Reload the standalone model of a run (extracted circuit or distilled student); report its accuracy on the
    run's test split and on its held-out-template split.

    Args:
        run: a run directory written by `bench extract` or `bench distill`.
        device: cpu, cuda, cuda:N or auto.
        dtype: float32 (default), bfloat16 or float16.
    """

    run: str
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not Path(self.run).is_dir():
            raise BenchError(f"--run {self.run} is not a directory; give a run written by `bench extract`")


def _task_and_model(manifest: dict, where: Path) -> tuple[str, str]:
    """An extraction's manifest holds its circuit; a distilled student's, its distill provenance."""
    if manifest.get("circuit"):
        circuit = Circuit.from_dict(manifest["circuit"])
        return circuit.task, circuit.model
    info = manifest.get("distill")
    if not isinstance(info, dict) or not {"task", "teacher"} <= set(info):
        raise BenchError(f"{where} records neither a circuit nor a distillation; re-create the run")
    return info["task"], info["teacher"]


def evaluate(args: EvaluateArgs) -> dict:
    run = RunDir(Path(args.run))
    where = run.model
    device = loading.resolve_device(args.device)
    model, manifest = load_pruned(where, device=device, dtype=loading.resolve_dtype(args.dtype))
    task_name, model_name = _task_and_model(manifest, where)
    task, tokenizer = get_task(task_name), loading.load_tokenizer(model_name)
    fn = lambda ids: model(ids.to(device), last_only=True)  # noqa: E731
    out = {"task": task_name, "model": model_name}
    for prefix, name in (("test", "test"), ("heldout", "test-heldout")):
        split = run.split(name)
        out[f"n_{prefix}"], out[f"{prefix}_accuracy"] = len(split), accuracy(task, tokenizer, fn, split)
        out.update(prefixed(prefix, scores(task, tokenizer, fn, split)))
    return out


def print_evaluate(result: dict, console: Console) -> None:
    console.print(f"{result['task']} on {result['model']}: standalone model accuracy "
                  f"{result['test_accuracy']:.1%} on {result['n_test']} test prompts (training templates), "
                  f"{result['heldout_accuracy']:.1%} on {result['n_heldout']} held-out-template prompts")
    if "test_score" in result:
        name = get_task(result["task"]).score_name
        console.print(f"{name}: {result['test_score']:.3f} on test, {result['heldout_score']:.3f} held-out (gain "
                      f"over another prompt's target: {result['test_score_gain']:.3f}, "
                      f"{result['heldout_score_gain']:.3f}; a model that ignores the prompt gains 0)")
