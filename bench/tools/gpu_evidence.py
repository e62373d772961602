"""Every GPU result of the project in one resumable command, for a GPU that is there for minutes, not hours.

    python -m bench.tools.gpu_evidence OUT [--device cuda] [--budget-s 540]
    python -m bench.tools.gpu_evidence OUT --dry-run      # the same steps on the CPU, a tiny model, tiny budgets

Three parts, in this order, each a few steps run as their own processes under a time cap (and all of them under
--budget-s):
1. latency: the heads + MLPs circuits of the three tasks (seed 0), restored from their records in
   results/runs-smollm2-cpu/ (extracted on the device if a restore fails), then `bench compare` with the full
   model and the HF reference, eager and compiled (reduce-overhead), fp32 and bf16: OUT/compare-smollm2-135m-gpu/.
2. perf: `python -m bench.tools.perf` on the device, the reference loop against the fast engine and speculation:
   OUT/perf-gpu.md.
3. paper-budget: the IOI seed-0 random-init student at the paper's 20000 steps × 64 prompts, bf16-mixed, with a
   checkpoint every 500 steps: what the budget leaves of it trains now, and a later call continues with
   --resume. OUT/distill-paper-budget/.
A step that finished leaves OUT/done/STEP, so a second call does only what is left. Each step prints a line as it
starts and as it ends, with the time so far; a step that fails says why in one line, the rest of its part is
skipped, and the next part goes on. Copy OUT's folders into results/ to commit them.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TASKS = ("ioi", "greater-than", "acronyms")
RECORDS = Path("results/runs-smollm2-cpu")
MIN_STEP_S = 30  # a step is not started with less time than this left


@dataclass(frozen=True)
class Step:
    """One command (`python -m ...` argv lists: each tried in turn until one succeeds) of a part, under a cap."""

    part: str
    name: str
    commands: tuple[tuple[str, ...], ...]
    cap_s: float
    resumable: bool = False  # a cap that cuts it short still counts as progress (its checkpoints stay)


@dataclass(frozen=True)
class Setting:
    """What the real run and the dry run differ in."""

    model: tuple[str, ...]  # --model ARGS for the verbs (empty: the embedded default)
    extract: tuple[str, ...]  # extra `bench extract` options
    compare: tuple[str, ...]
    perf: tuple[str, ...]
    distill: tuple[str, ...]
    tasks: tuple[str, ...]
    compiles: tuple[str, ...]
    restore: bool  # restore the committed records (the real run) or extract and record (the dry run)


REAL = Setting((), (), (), ("--speculate", "4", "8"),
               ("--steps", "20000", "--batch-size", "64", "--precision", "bf16-mixed", "--val-every", "500",
                "--ckpt-every", "500"), TASKS, ("none", "reduce-overhead"), True)


def dry_setting(model: Path) -> Setting:
    small = ("--n-patching", "4", "--n-val", "4", "--n-test", "8")
    return Setting(("--model", str(model)), (*small, "--fit-steps", "2", "--fit-pool", "2"),
                   ("--batch-size", "8", "--warmup", "1"), (*small, "--runs", "20", "--speculate", "2"),
                   ("--steps", "4", "--batch-size", "4", "--val-every", "2", "--ckpt-every", "2"), ("ioi",),
                   ("none",), False)


def bench(*args: str) -> tuple[str, ...]:
    return ("bench.cli", *args)


def latency_steps(out: Path, s: Setting, device: str) -> list[Step]:
    runs, steps = out / "runs", []
    for task in s.tasks:
        run = runs / f"extract-{task}-s0"
        extract = bench("extract", "--task", task, "--seed", "0", *s.model, *s.extract, "--device", device,
                        "--out", str(run), "--overwrite")
        if s.restore:
            cmds = (("bench.tools.record", "restore", str(RECORDS / run.name), str(run)), extract)
        else:  # the dry run has no records of its tiny model: it extracts and makes one, then restores that
            rec = out / "records" / run.name
            cmds = (extract + ("&&",) + ("bench.tools.record", "save", str(run), str(rec)) + ("&&",)
                    + ("bench.tools.record", "restore", str(rec), str(out / "restored" / run.name)),)
        steps.append(Step("latency", f"circuit-{task}", cmds, 240))
    for dtype in ("float32", "bfloat16"):
        for mode in s.compiles:
            name = f"{'fp32' if dtype == 'float32' else 'bf16'}-{'eager' if mode == 'none' else mode}"
            steps.append(Step("latency", f"compare-{name}", (bench(
                "compare", "--task", "all", "--runs", str(runs), "--device", device, "--dtype", dtype, "--compile",
                mode, *s.compare, "--out", str(out / "compare-smollm2-135m-gpu" / name), "--overwrite"),), 180))
    return steps


def plan(out: Path, s: Setting, device: str) -> list[Step]:
    perf = Step("perf", "perf", (("bench.tools.perf", *s.model, "--device", device, "--tasks", *s.tasks, *s.perf,
                                  "--out", str(out / "perf-gpu.md")),), 240)
    run = out / "distill-paper-budget" / "distill-ioi-s0"
    resume = ("--resume",) if (run / "checkpoints" / "last.ckpt").is_file() else ("--overwrite",)
    distill = Step("paper-budget", "distill-ioi-s0", (bench(
        "distill", "--task", "ioi", "--match", str(out / "runs" / "extract-ioi-s0"), "--seed", "0", *s.distill,
        "--device", device, "--out", str(run), *resume),), 600, resumable=True)
    return [*latency_steps(out, s, device), perf, distill]


def run_command(cmd: tuple[str, ...], cap_s: float, log) -> tuple[int | None, str]:
    """`python -m` each `&&`-joined piece of cmd in turn; (exit status, or None when the cap cut it; its last line)."""
    pieces, piece = [], []
    for word in (*cmd, "&&"):
        if word == "&&":
            pieces.append(piece)
            piece = []
        else:
            piece.append(word)
    deadline = time.monotonic() + cap_s
    for argv in pieces:
        try:
            done = subprocess.run([sys.executable, "-m", *argv], stdout=log, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None, f"cut at its {cap_s:.0f} s cap"
        if done.returncode:
            return done.returncode, last_line(log.name)
    return 0, ""


def last_line(path: str) -> str:
    lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_step(step: Step, out: Path, left_s: float, say) -> bool:
    """Run `step` (its commands in turn until one succeeds) within min(cap, left_s); True when it finished."""
    marker = out / "done" / step.name
    if marker.exists():
        say(f"{step.part}/{step.name}: done before, skipped")
        return True
    cap = min(step.cap_s, left_s)
    if cap < MIN_STEP_S:
        say(f"{step.part}/{step.name}: skipped, {left_s:.0f} s of the budget left")
        return False
    say(f"{step.part}/{step.name}: start (cap {cap:.0f} s)")
    with open(out / "logs" / f"{step.name}.log", "a") as log:
        for i, cmd in enumerate(step.commands):
            status, why = run_command(cmd, cap, log)
            if status == 0:
                marker.touch()
                say(f"{step.part}/{step.name}: done")
                return True
            fallback = " ; trying its fallback" if i + 1 < len(step.commands) else ""
            say(f"{step.part}/{step.name}: failed ({why}){fallback}")
    return step.resumable and status is None  # a cut resumable step leaves its checkpoints for the next call


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools.gpu_evidence", description=__doc__.splitlines()[0])
    p.add_argument("out", help="where everything goes (resumed if it holds an earlier call's work)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=540.0, help="seconds for all parts together")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, a tiny random model and tiny budgets")
    args = p.parse_args(argv)
    out = Path(args.out)
    for sub in ("done", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    say = lambda text: print(f"[{time.monotonic() - start:6.0f} s] {text}", flush=True)  # noqa: E731
    if args.dry_run:
        from bench.tools.tiny_model import tiny_model_dir

        setting, device = dry_setting(tiny_model_dir(out / "tiny-model")), "cpu"
    else:
        setting, device = REAL, args.device
    failed: set[str] = set()
    for step in plan(out, setting, device):
        if step.part in failed:
            say(f"{step.part}/{step.name}: skipped, an earlier step of its part failed")
            continue
        if not run_step(step, out, args.budget_s - (time.monotonic() - start), say):
            failed.add(step.part)
    say(f"finished: {len(list((out / 'done').iterdir()))} steps done in all; parts with a failure: "
        f"{', '.join(sorted(failed)) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
