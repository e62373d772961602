"""Does circuit + KD help? For `bench distill --init circuit` runs: the KL to the full model on the held-out templates
and on the test split before training (the circuit as extracted) and after, accuracy after, per run and per learning
rate, and for each learning rate whether it lowered the held-out KL on every run.

    python -m bench.tools.kd_check --runs runs/kd-lr/* --out results/kd-lr-cpu.md
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from bench.core.rundir import RunDir, write_report
from models.types import BenchError


def row(run: Path) -> dict:
    """One circuit + KD run's numbers, from its config.json and metrics.json."""
    rd = RunDir(run)
    if not rd.finished:
        raise BenchError(f"{run} has no metrics.json: unfinished, or not a run; leave it out of --runs")
    args, m = rd.config()["args"], rd.metrics()
    if args.get("init") != "circuit":
        raise BenchError(f"{run} is not a circuit + KD run (--init {args.get('init')}); leave it out of --runs")
    s = m["student"]
    return {"run": run.name, "circuit": Path(args["match"]).name, "lr": float(args["lr"]),
            "steps": int(m["train"]["steps"]), "batch": int(args["batch_size"]),
            "heldout_kl_before": s["heldout_kl_to_teacher_at_init"], "heldout_kl_after": s["heldout_kl_to_teacher"],
            "test_kl_before": s["test_kl_to_teacher_at_init"], "test_kl_after": s["test_kl_to_teacher"],
            "test_accuracy": s["test_accuracy"], "heldout_accuracy": s["heldout_accuracy"],
            "circuit_heldout_accuracy": (m.get("match") or {}).get("circuit_heldout_accuracy"),
            "wall_s": m["train"]["wall_s"], "machine": rd.config().get("versions", {}).get("cpu", "?")}


def verdicts(rows: list[dict]) -> list[str]:
    """Per learning rate: on how many runs it lowered the held-out KL, and the mean change."""
    by_lr = defaultdict(list)
    for r in rows:
        by_lr[r["lr"]].append(r["heldout_kl_after"] / r["heldout_kl_before"] - 1)
    return [f"- lr {lr:g}: the held-out KL fell on {sum(c < 0 for c in ch)} of {len(ch)} runs "
            f"(mean change {100 * sum(ch) / len(ch):+.1f}%){'; on every run' if all(c < 0 for c in ch) else ''}."
            for lr, ch in sorted(by_lr.items(), reverse=True)]


def report(rows: list[dict], argv: list[str]) -> str:
    lines = ["# Circuit + KD: the KL to the full model before and after", "",
             f"Command: `python -m bench.tools.kd_check {' '.join(argv)}`", "",
             f"Ran on: {', '.join(sorted({r['machine'] for r in rows}))}. Before: the circuit as extracted (its fitted constants); after: "
             "fine-tuned with KD (`bench distill --init circuit`, the folded constants fixed).", "",
             "| run | circuit | lr | steps × batch | held-out KL before → after | test KL before → after "
             "| held-out accuracy (circuit) | test accuracy | train s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (r["circuit"], -r["lr"])):
        circuit = r["circuit_heldout_accuracy"]
        lines.append(f"| {r['run']} | {r['circuit']} | {r['lr']:g} | {r['steps']} × {r['batch']} "
                     f"| {r['heldout_kl_before']:.3f} → {r['heldout_kl_after']:.3f} "
                     f"| {r['test_kl_before']:.3f} → {r['test_kl_after']:.3f} | {r['heldout_accuracy']:.1%}"
                     + (f" ({circuit:.1%})" if circuit is not None else "")
                     + f" | {r['test_accuracy']:.1%} | {r['wall_s']:.0f} |")
    return "\n".join(lines + ["", *verdicts(rows), ""])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.tools.kd_check", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="`bench distill --init circuit` run directories")
    p.add_argument("--out", help="write the markdown report here, its rows as JSON beside it")
    args = p.parse_args(argv)
    try:
        rows = [row(Path(r)) for r in args.runs]
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_report(report(rows, argv), rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
