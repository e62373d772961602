"""Run directories: the files a run holds (`RunDir`, their one reader and writer), distinct default names, refuse to
clobber, write into a partial directory, publish it whole at the end, and clear the partial directories of
processes that are gone."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch

from bench.core.latency import cpu_threads
from models.types import BenchError, Circuit, read_json
from tasks.data import Split, load_splits


CONFIG, METRICS, CIRCUIT, STEPS, SPLITS = "config.json", "metrics.json", "circuit.json", "steps.jsonl", "splits"
MODELS = ("pruned", "student")  # where a run keeps its standalone model: bench extract, bench distill


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory, named here only. config.json: the command, its resolved options and the
    versions; metrics.json: written last, so its presence marks a finished run; circuit.json and steps.jsonl
    (extractions); splits/NAME.jsonl: the prompts it was scored on; pruned/ or student/: the standalone model."""

    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def is_run(self) -> bool:
        return (self.path / CONFIG).is_file()

    @property
    def finished(self) -> bool:
        return (self.path / METRICS).is_file()

    def config(self) -> dict:
        return read_json(self.path / CONFIG)

    def metrics(self) -> dict:
        return read_json(self.path / METRICS)

    def circuit(self) -> Circuit:
        return Circuit.load(self.path / CIRCUIT)

    def split(self, name: str) -> Split:
        return Split.from_jsonl(name, self.path / SPLITS / f"{name}.jsonl")

    def splits(self) -> dict[str, Split]:
        return load_splits(self.path / SPLITS)

    @property
    def model(self) -> Path:
        """Its standalone model: pruned/ (an extraction) or student/ (a distillation)."""
        return next((self.path / d for d in MODELS if (self.path / d).is_dir()), self.path / MODELS[0])

    def write_config(self, command: str, args: dict, **extra) -> None:
        write_json(self.path / CONFIG, {"command": command, "args": args, "versions": versions(), **extra})

    def write_metrics(self, metrics: dict) -> None:
        """Written whole or not at all: the file marks the run finished."""
        partial = self.path / f".{METRICS}.{os.getpid()}"
        write_json(partial, metrics)
        partial.replace(self.path / METRICS)

    def unfinish(self) -> None:
        """A resumed run is unfinished until it writes its metrics again."""
        (self.path / METRICS).unlink(missing_ok=True)

    def write_circuit(self, circuit: Circuit) -> None:
        (self.path / CIRCUIT).write_text(circuit.to_json())

    def write_steps(self, steps: list[dict]) -> None:
        (self.path / STEPS).write_text("".join(json.dumps(s) + "\n" for s in steps))

    def write_split(self, split: Split) -> None:
        (self.path / SPLITS).mkdir(exist_ok=True)
        split.to_jsonl(self.path / SPLITS / f"{split.name}.jsonl")


NOT_RESULTS = ("out", "overwrite", "batch_size", "cache_gb", "speculate")  # options that do not change the result


def default_dir(readable: str, args, skip: tuple[str, ...] = ()) -> Path:
    """runs/READABLE-HASH: the hash covers every option that can change the result, so two commands that differ
    in any of them (--no-include-mlps, --n-val, --dtype, ...) never share a default directory. `skip`: options
    a later command may change on the same directory (distill's --steps with --resume)."""
    options = {k: v for k, v in asdict(args).items() if k not in NOT_RESULTS + skip}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{readable}-{digest}"


def clear_stale_partials(out: Path) -> None:
    """Remove `.NAME.partial-PID` directories beside `out` whose process no longer exists (killed runs)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_out(out: Path, overwrite: bool) -> None:
    """Fail before any work if `out` holds results and --overwrite was not given."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BenchError(f"--out {out} already holds results; pass --overwrite or choose another --out")


@contextmanager
def publishing(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh partial directory beside `out`; on success it replaces `out`, on failure it is removed."""
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_partials(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_report(text: str, rows: list, out: str | None) -> None:
    """A check's markdown report printed, and with `out` also written there, its rows as JSON beside it."""
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)


def versions() -> dict:
    import lightning
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "lightning": lightning.__version__,
            "cpu": cpu_threads()}  # what the run's wall times ran on
