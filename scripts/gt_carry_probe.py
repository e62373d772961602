"""Greater-than runs on N fresh prompts of the training templates (not the runs' test split: a larger sample),
split by whether the start year ends in 9, where a correct answer must move to the next decade. Used by
results/gt-alpha-s1-smollm2-135m/ and results/seeds-cpu-greater-than-smollm2-135m/:

    python scripts/gt_carry_probe.py --n 500 --runs RUN... --out results/seeds-cpu-greater-than-smollm2-135m/probe
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.core.metrics import accuracy
from models import loading
from models.generate import hf_last_logits
from models.io import load_pruned
from models.types import Circuit
from tasks import get_task
from tasks.base import draw_examples
from tasks.data import Split


def carry_splits(task, tok, n: int) -> dict[str, Split]:
    """All n prompts, and the same n split by the task's stratum (greater-than's: the start year ends in 9)."""
    ex = draw_examples(task.spaces(tok, heldout=False), n, 7, task.name, stream="probe")  # apart from the splits
    return {"all": Split("all", ex), "nine": Split("nine", [e for e in ex if task.stratum(e)]),
            "other": Split("other", [e for e in ex if not task.stratum(e)])}


def rows_for(runs: list[Path], n: int, device) -> list[dict]:
    first = Circuit.load(runs[0] / "circuit.json")
    model, tok = loading.load_model(first.model, device=device)
    task = get_task(first.task)
    splits = carry_splits(task, tok, n)
    fns = {"full": hf_last_logits(model)}
    for run in runs:
        pruned, _ = load_pruned(run / "pruned", device=device)
        fns[str(run)] = lambda x, m=pruned: m(x.to(device), last_only=True)
    rows = []
    for name, fn in fns.items():
        acc = {k: accuracy(task, tok, fn, s, batch_size=50) for k, s in splits.items()}
        rows.append({"model": name, "n": n, "accuracy": acc["all"], "n_nine": len(splits["nine"]),
                     "accuracy_nine": acc["nine"], "accuracy_other": acc["other"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = p.parse_args()
    rows = rows_for([Path(r) for r in args.runs], args.n, loading.resolve_device(args.device))
    lines = ["| model | accuracy | start year ends in 9 | other start years |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['accuracy']:.1%} | {r['accuracy_nine']:.1%} (n={r['n_nine']}) | "
              f"{r['accuracy_other']:.1%} |" for r in rows]
    print("\n".join(lines))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
        Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
