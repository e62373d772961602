"""Check: extracted pruned models on phrasings that are in none of the task's templates, of other token lengths.

The search saw prompts of the training templates only, all of one token length. Here each run's standalone
pruned model and the full model answer prompts of every off-template phrasing of the task (`Task.off_template`,
IOI in both orders), at that phrasing's own length. A position-free model (mean-pooled, zero) takes any length;
a per-position model (mean) refuses every length but its own, and the table says so:

    python -m bench.tools.offtemplate --runs runs/extract-ioi-... --n 100 --out results/offtemplate-smollm2-135m.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.core.metrics import accuracy, kl_to
from bench.core.rundir import RunDir, write_report
from models import loading
from models.generate import hf_last_logits
from models.io import load_pruned
from models.types import BenchError
from tasks import get_task
from tasks.data import phrasing_split


def score_run(run: Path, model, tok, n: int, seed: int, device) -> list[dict]:
    """One row per off-template phrasing: its length, the full model's and the pruned model's accuracy, the KL."""
    circuit = RunDir(run).circuit()
    pruned, _ = load_pruned(RunDir(run).model, device=device)
    base = {"run": str(run), "task": circuit.task, "ablation": circuit.ablation}
    return [{**base, **row} for row in score_pruned(get_task(circuit.task), model, tok, pruned, n, seed, device)]


def score_pruned(task, model, tok, pruned, n: int, seed: int, device) -> list[dict]:
    """`score_run`'s rows for a pruned model in memory."""
    full_fn, pruned_fn = hf_last_logits(model), (lambda ids: pruned(ids.to(device), last_only=True))
    rows = []
    for template in task.off_template:
        split = phrasing_split(task, tok, template, n, seed)
        row = {"phrasing": template.name, "tokens": len(split.examples[0].input_ids), "n": len(split),
               "full_accuracy": accuracy(task, tok, full_fn, split)}
        try:
            row["pruned_accuracy"] = accuracy(task, tok, pruned_fn, split)
            row["kl_to_full"] = kl_to(full_fn, pruned_fn, split)
        except BenchError as e:
            row["refused"] = str(e)
        rows.append(row)
    return rows


def markdown(rows: list[dict], args) -> str:
    lines = ["# Off-template phrasings", "", f"Command: `python -m bench.tools.offtemplate {' '.join(args.argv)}`", "",
             "Each phrasing is in none of the task's templates; its prompts have their own token length. "
             f"{args.n} prompts per phrasing, seed {args.seed}.", "",
             "| run | ablation | phrasing | tokens | full model | pruned model (Δ pts) | KL to full |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "refused" in r:
            cut, kl = "refused (other length)", "—"
        else:
            cut = f"{r['pruned_accuracy']:.1%} ({100 * (r['pruned_accuracy'] - r['full_accuracy']):+.1f})"
            kl = f"{r['kl_to_full']:.4f}"
        lines.append(f"| {Path(r['run']).name} | {r['ablation']} | {r['phrasing']} | {r['tokens']} | "
                     f"{r['full_accuracy']:.1%} | {cut} | {kl} |")
    scored = [r for r in rows if "refused" not in r]
    if scored:
        full = sum(r["full_accuracy"] for r in scored) / len(scored)
        cut = sum(r["pruned_accuracy"] for r in scored) / len(scored)
        lines += ["", f"Over the {len(scored)} scored rows: full model {full:.1%}, pruned models {cut:.1%} "
                      f"({100 * (cut - full):+.1f} pts)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.tools.offtemplate", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="`bench extract` run directories (one model)")
    p.add_argument("--n", type=int, default=100, help="prompts per phrasing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the markdown report here too, and its rows as .json")
    args = p.parse_args(argv)
    args.argv = argv
    try:
        runs = [Path(r) for r in args.runs]
        models = {RunDir(r).circuit().model for r in runs}
        if len(models) != 1:
            raise BenchError(f"the runs mix models ({', '.join(sorted(models))}); give runs of one model")
        device = loading.resolve_device(args.device)
        model, tok = loading.load_model(models.pop(), device=device)
        with torch.inference_mode():
            rows = [row for r in runs for row in score_run(r, model, tok, args.n, args.seed, device)]
    except BenchError as e:
        p.exit(2, f"error: {e}\n")
    text = markdown(rows, args)
    write_report(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
