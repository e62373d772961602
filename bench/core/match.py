"""What `bench distill --match RUN_DIR` reads from a `bench extract` run: the circuit, its metrics and its splits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.rundir import RunDir
from models.types import BenchError, Circuit


@dataclass
class ExtractionRun:
    """What `--match` reads from an extraction run directory."""

    path: Path
    circuit: Circuit
    metrics: dict
    splits: dict

    @property
    def target(self) -> int:
        return self.metrics["pruned"]["non_embedding"]


def read_run(path: Path) -> ExtractionRun:
    """The circuit, metrics and splits of a `bench extract` run; anything missing or corrupt -> BenchError."""
    rd = RunDir(path)
    circuit, metrics = rd.circuit(), rd.metrics()
    try:
        target = metrics["pruned"]["non_embedding"]
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise ValueError(f"non_embedding is {target!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{path / 'metrics.json'} is corrupt ({type(e).__name__}: {e}); "
                         "re-run `bench extract`") from None
    return ExtractionRun(path, circuit, metrics, rd.splits())


def match_info(run: ExtractionRun | None, student: dict) -> dict | None:
    if run is None:
        return None
    pruned = run.metrics["pruned"]
    return {"run": str(run.path), "circuit_non_embedding": run.target, "ratio": student["non_embedding"] / run.target,
            "circuit_test_accuracy": pruned.get("test_accuracy"), "circuit_test_kl": pruned.get("test_kl_to_full"),
            "circuit_heldout_accuracy": pruned.get("heldout_accuracy")}
