"""Check: two fits of the same circuits scored side by side. For each pair of `bench extract` runs of the same name
under --old and --new (the same task, seed and circuit), both runs' saved constants are scored on the new run's
prompts: accuracy and KL to the full model on the test split (training templates), on the held-out templates and
on the task's off-template phrasings (`bench.tools.offtemplate`), with each run's fit seconds:

    python -m bench.tools.fit_check --old results/runs-smollm2-cpu --new runs/fit-speed --out results/fit-check-cpu.md
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from bench.core.pipeline import evaluate_models, prepare_run
from bench.core.match import read_run
from bench.tools.offtemplate import score_pruned
from bench.core.rundir import RunDir, write_report
from models.io import CONSTANTS, load_means
from models.pruned import count_params_of
from models.surgery import prune, pruned_config
from models.types import BenchError

KEYS = ("test", "heldout", "offtemplate")
ACCURACY_POINTS, KL_SHARE = 1.0, 0.05  # the bounds a faster fit is held to


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows) if rows else float("nan")


def score(p, run: Path, full_params: dict, n: int, seed: int) -> dict:
    """Accuracy and KL of `run`'s circuit with its saved constants."""
    circuit = read_run(run).circuit
    pruned = prune(p.model, circuit.removed(), load_means(run / CONSTANTS).to(p.device))
    with torch.inference_mode():
        # no off-template prompts here: the check scores its own below
        m = evaluate_models(p.task, p.tokenizer, p.model, pruned, p.dm, full_params, 0)["pruned"]
        off = [r for r in score_pruned(p.task, p.model, p.tokenizer, pruned, n, seed, p.device) if "refused" not in r]
    return {"test": m["test_accuracy"], "heldout": m["heldout_accuracy"], "offtemplate": mean(off, "pruned_accuracy"),
            "test_kl": m["test_kl_to_full"], "heldout_kl": m["heldout_kl_to_full"],
            "offtemplate_kl": mean(off, "kl_to_full"), "fit_s": RunDir(run).metrics()["fit"]["wall_s"]}


def check_pair(old: Path, new: Path, n: int, device: str) -> dict:
    """Both runs' constants scored on the new run's prompts; refused unless the two share task, seed and circuit."""
    a, b = read_run(old), read_run(new)
    if (a.circuit.task, a.circuit.seed, a.circuit.removed()) != (b.circuit.task, b.circuit.seed, b.circuit.removed()):
        raise BenchError(f"{old} and {new} are not the same circuit of the same task and seed; pair runs of one "
                         "search")
    args, p = prepare_run(b, device)
    full_params = count_params_of(pruned_config(p.model, (), p.means))
    return {"run": new.name, "task": args.task, "seed": args.seed, "old": score(p, old, full_params, n, args.seed),
            "new": score(p, new, full_params, n, args.seed)}


def verdict(old: dict, new: dict) -> str:
    """'yes' when every accuracy of `new` is at most ACCURACY_POINTS under `old`'s and every KL at most KL_SHARE
    above it; else what missed."""
    missed = [k for k in KEYS if 100 * (old[k] - new[k]) > ACCURACY_POINTS + 1e-9]
    missed += [f"{k} KL" for k in KEYS if new[f"{k}_kl"] > (1 + KL_SHARE) * old[f"{k}_kl"]]
    return "yes" if not missed else "no: " + ", ".join(missed)


def cell(new: float, old: float, fmt: str) -> str:
    """'new (old)'; a task without such prompts (acronyms has no off-template phrasings): '—'."""
    return "—" if math.isnan(new) else f"{new:{fmt}} ({old:{fmt}})"


def markdown(rows: list[dict], argv: list[str]) -> str:
    lines = ["# Two fits of the same circuits", "", f"Command: `python -m bench.tools.fit_check {' '.join(argv)}`", "",
             "Each cell: new (old). Accuracy on the test split, the held-out templates and the off-template "
             "phrasings (their mean); KL to the full model on the same. Within bounds: no accuracy more than "
             f"{ACCURACY_POINTS:g} point under the old fit's, no KL more than {KL_SHARE:.0%} above it. Fit seconds are each "
             "run's own `metrics.json`, on the machine its `config.json` names.", "",
             "| run | test | held-out | off-template | test KL | held-out KL | off-template KL | fit s | "
             "within bounds |", "| --- |" + " ---: |" * 7 + " --- |"]
    for r in rows:
        o, n = r["old"], r["new"]
        acc = [cell(n[k], o[k], ".1%") for k in KEYS]
        kl = [cell(n[f"{k}_kl"], o[f"{k}_kl"], ".3f") for k in KEYS]
        lines.append(f"| {r['run']} | {' | '.join(acc + kl)} | {n['fit_s']:.0f} ({o['fit_s']:.0f}) | "
                     f"{verdict(o, n)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.tools.fit_check", description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="a folder of `bench extract` runs")
    p.add_argument("--new", required=True, help="a folder of runs of the same names")
    p.add_argument("--n", type=int, default=100, help="prompts per off-template phrasing")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the markdown report here too (and its rows as .json)")
    args = p.parse_args(argv)
    try:
        for folder in (args.old, args.new):
            if not Path(folder).is_dir():
                raise BenchError(f"{folder} is not a directory; give folders of `bench extract` runs")
        new = sorted(d for d in Path(args.new).iterdir() if RunDir(d).finished)
        pairs = [(Path(args.old) / d.name, d) for d in new if RunDir(Path(args.old) / d.name).finished]
        if not pairs:
            raise BenchError(f"no run under {args.new} has a namesake under {args.old}")
        rows = []
        for old, run in pairs:
            rows.append(check_pair(old, run, args.n, args.device))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    except BenchError as e:
        p.exit(2, f"error: {e}\n")
    text = markdown(rows, argv)
    write_report(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
