"""`bench evaluate`: reload a run's standalone pruned model and score it on the run's own test split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.evaluate import accuracy
from models import loading
from models.io import load_pruned
from models.types import BenchError, Circuit
from tasks import get_task
from tasks.data import Split


@dataclass
class EvaluateArgs:
    """Reload the pruned model of an extraction run and report its test accuracy.

    Args:
        run: a run directory written by `bench extract`.
        device: cpu, cuda, cuda:N or auto.
        dtype: float32 (default), bfloat16 or float16.
    """

    run: str
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not Path(self.run).is_dir():
            raise BenchError(f"--run {self.run} is not a directory; give a run written by `bench extract`")


def evaluate(args: EvaluateArgs) -> dict:
    run = Path(args.run)
    device = loading.resolve_device(args.device)
    model, manifest = load_pruned(run / "pruned", device=device, dtype=loading.resolve_dtype(args.dtype))
    if manifest.get("circuit") is None:
        raise BenchError(f"{run / 'pruned'} has no circuit in its manifest; re-run `bench extract`")
    circuit = Circuit.from_dict(manifest["circuit"])
    task, tokenizer = get_task(circuit.task), loading.load_tokenizer(circuit.model)
    test = Split.from_jsonl("test", run / "splits" / "test.jsonl")
    fn = lambda ids: model(ids.to(device), last_only=True)  # noqa: E731
    return {"task": circuit.task, "model": circuit.model, "n_test": len(test),
            "test_accuracy": accuracy(task, tokenizer, fn, test)}
