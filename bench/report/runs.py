"""What `bench compare` reads from a run directory of `bench extract` or `bench distill`: its method, settings,
task, model, seed, standalone model, what it reported, and what building it cost (seconds and MACs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.budget import PAPER_STEPS
from bench.core.rundir import RunDir
from bench.report.results import CKD, HEADS, KD, MLPS
from models.types import BenchError
from tasks import get_task


@dataclass(frozen=True)
class Run:
    """What compare needs from one `bench extract` or `bench distill` run directory."""

    path: Path
    method: str
    settings: str
    task: str
    model: str
    seed: int
    weights: Path  # pruned/ or student/
    reported: dict  # non_embedding, accuracy, kl as the run measured them
    search_s: float | None
    train_s: float | None
    build_macs: int | None = None  # what building it took, in MACs (runs from before they were counted: None)


def model_id(name: str) -> str:
    """A local model directory by its absolute path (so ./m and m agree); a hub id as it is."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def run_dirs(roots: list[str] | None) -> list[Path]:
    """Every directory with a config.json among the roots and one level below them (hidden ones skipped)."""
    if not roots:
        if not Path("runs").is_dir():
            raise BenchError("there is no runs/ directory here; run `bench extract` first, or pass --runs DIR")
        roots = ["runs"]
    found: dict[Path, None] = {}
    for root in map(Path, roots):
        kids = [root] if RunDir(root).is_run else sorted(
            p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and RunDir(p).is_run)
        if not kids:
            raise BenchError(f"{root} holds no run directories (no config.json in it or one level down); "
                             "give runs written by `bench extract` or `bench distill`")
        found.update(dict.fromkeys(p.resolve() for p in kids))
    return list(found)


def read_run(path: Path, task: str = "all") -> Run | None:
    """One run directory (None if it is of another task than `task`); anything missing, corrupt or of another
    command -> one BenchError line."""
    rd = RunDir(path)
    config = rd.config()
    command = config.get("command")
    if command not in ("extract", "distill"):
        raise BenchError(f"{path} is not a `bench extract` or `bench distill` run (config.json says command "
                         f"{command!r}); leave it out of --runs")
    if task != "all" and isinstance(config.get("args"), dict) and config["args"].get("task") not in (None, task):
        return None  # another task's run: not needed, so not read further
    if not rd.finished:
        raise BenchError(f"{path} has no metrics.json: the run is unfinished or failed; finish it, or leave it out "
                         "of --runs")
    metrics = rd.metrics()
    try:
        run = (_extract_run if command == "extract" else _distill_run)(path, config, metrics)
        get_task(run.task)
        return run
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BenchError(f"{path} has a corrupt config.json or metrics.json ({type(e).__name__}: {e}); "
                         f"re-run `bench {command}`") from None
    except BenchError as e:
        raise BenchError(f"{path}: {e}") from None


def _extract_run(path: Path, config: dict, metrics: dict) -> Run:
    a, pruned = config["args"], metrics["pruned"]
    method = MLPS if _bool(a["include_mlps"]) else HEADS
    reported = {"non_embedding": int(pruned["non_embedding"]), "accuracy": float(pruned["test_accuracy"]),
                "kl": float(pruned["test_kl_to_full"]), **_searched(metrics)}
    fit = metrics.get("fit") or {"steps": 0}  # runs from before fitted constants had none
    jitter = f", after 0–{int(fit['jitter'])} filler sentences" if fit.get("jitter") else ""
    lengths = fit.get("lengths") or []  # runs from before the fit used other lengths have none
    lengths = f", prompts of {len(lengths)} token lengths" if len(lengths) > 1 else ""
    constants = (f"constants fitted for {int(fit['steps'])} steps × {int(fit['batch_size'])} prompts at lr "
                 f"{float(fit['lr']):g}{jitter}{lengths}" if int(fit["steps"]) else "the patching means as constants")
    return Run(path, method, f"alpha {float(a['alpha']):g}, {a['ablation']} ablation, {constants}", str(a["task"]),
               model_id(str(a["model"])), int(a["seed"]), RunDir(path).model, reported,
               float(metrics["search"]["wall_s"]), float(fit["wall_s"]) if int(fit["steps"]) else None,
               _macs(metrics.get("build")))


def _distill_run(path: Path, config: dict, metrics: dict) -> Run:
    a, student = config["args"], metrics["student"]
    if a["init"] not in ("random", "circuit"):
        raise ValueError(f"unknown init {a['init']!r}")
    size = "sized to its --match run" if a.get("match") else f"L{a['layers']} H{a['heads']} d_mlp {a['d_mlp']}"
    ce = f", CE weight {float(a['ce_weight']):g}" if float(a.get("ce_weight") or 0) else ""
    if "steps" not in a:
        raise ValueError("it was trained on a run's fixed prompts (before the task stream); re-run `bench distill`")
    pool = int(a.get("teacher_pool") or 0)
    budget = ("its circuit's build MACs" if a.get("budget") == "matched" else
              f"{int(a['steps'])} steps ({int(a['steps']) / PAPER_STEPS:.1%} of the paper's {PAPER_STEPS:,})")
    steps = f"{budget} × {int(a['batch_size'])} " + (f"prompts of a {pool}-prompt teacher pool" if pool
                                                     else "streamed prompts")
    settings = f"{steps}, lr {float(a['lr']):g}, T {float(a['temperature']):g}{ce}, {size}"
    reported = {"non_embedding": int(student["non_embedding"]), "accuracy": float(student["test_accuracy"]),
                "kl": float(student["test_kl_to_teacher"]), "steps": int(metrics["train"]["steps"]),
                "batch_size": int(a["batch_size"])}
    search, fit, circuit_macs = _circuit_build(a.get("match")) if a["init"] == "circuit" else (None, 0.0, 0)
    train = float(metrics["train"]["wall_s"]) + float(metrics["train"].get("teacher_pool_s", 0))
    macs = _macs(metrics["train"])
    return Run(path, CKD if a["init"] == "circuit" else KD, settings, str(a["task"]),
               model_id(str(config.get("teacher") or metrics["teacher"]["model"])), int(a["seed"]), RunDir(path).model,
               reported, search, fit + train, None if macs is None or circuit_macs is None else macs + circuit_macs)


def _searched(metrics: dict) -> dict:
    """Where the circuit stood after the search, before the fit: its MACs and accuracy (runs that recorded them)."""
    build, search = metrics.get("build") or {}, metrics["search"]
    if "heldout_accuracy" not in search or "macs" not in build:
        return {}
    return {"search_macs": int(build["means_macs"]) + int(build["search_macs"]),
            "search_test_accuracy": float(search["test_accuracy"]),
            "search_heldout_accuracy": float(search["heldout_accuracy"])}


def _macs(block: dict | None) -> int | None:
    """A build or train block's MACs; None for a run from before they were counted."""
    return int(block["macs"]) if isinstance(block, dict) and block.get("macs") is not None else None


def _circuit_build(match: str | None) -> tuple[float | None, float, int | None]:
    """(search, fit of its constants) wall times and build MACs of the circuit a circuit + KD student started from,
    as its extract row splits them into search and training; (None, 0, None) if the run is gone."""
    try:
        m = RunDir(Path(match)).metrics()
        return float(m["search"]["wall_s"]), float((m.get("fit") or {}).get("wall_s", 0)), _macs(m.get("build"))
    except (BenchError, KeyError, TypeError, ValueError):
        return None, 0.0, None


def _bool(x) -> bool:
    if not isinstance(x, bool):
        raise ValueError(f"include_mlps is {x!r}, not true or false")
    return x
