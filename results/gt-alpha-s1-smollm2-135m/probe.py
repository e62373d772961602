"""Greater-than runs on N fresh prompts of the training templates (not the runs' test split: a larger sample),
split by whether the start year ends in 9, where a correct answer must move to the next decade:

    python results/gt-alpha-s1-smollm2-135m/probe.py --n 500 --runs RUN... --out results/gt-alpha-s1-smollm2-135m/probe
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models import loading
from models.generate import greedy, hf_last_logits
from models.io import load_pruned
from models.types import Circuit
from tasks import get_task
from tasks.base import draw_examples


def answers_ok(task, tok, fn, ids: torch.Tensor, targets: torch.Tensor, batch: int = 50) -> torch.Tensor:
    gen = torch.cat([greedy(fn, b, task.n_new(tok)) for b in ids.split(batch)])  # (N, n_new)
    return task.correct(tok, targets, gen)  # (N,) bool


def rows_for(runs: list[Path], n: int, device) -> list[dict]:
    first = Circuit.load(runs[0] / "circuit.json")
    model, tok = loading.load_model(first.model, device=device)
    task = get_task(first.task)
    ex = draw_examples(task.spaces(tok, heldout=False), n, 7, task.name, stream="probe")  # apart from the splits
    ids, targets = torch.tensor([e.input_ids for e in ex], device=device), torch.tensor([e.target for e in ex])
    nines = targets % 10 == 9  # (N,) the start year ends in 9
    fns = {"full": hf_last_logits(model)}
    for run in runs:
        pruned, _ = load_pruned(run / "pruned", device=device)
        fns[str(run)] = lambda x, m=pruned: m(x, last_only=True)
    rows = []
    with torch.inference_mode():
        for name, fn in fns.items():
            ok = answers_ok(task, tok, fn, ids, targets).cpu()
            rows.append({"model": name, "n": n, "accuracy": ok.float().mean().item(), "n_nine": int(nines.sum()),
                         "accuracy_nine": ok[nines].float().mean().item(),
                         "accuracy_other": ok[~nines].float().mean().item()})
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
