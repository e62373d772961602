"""Check: which fit of the constants generalises. Each run's circuit is kept; its removed components' constants are
refitted under each fit setting from the same patching means (the run's saved prompts), and each pruned model is
scored on the test split (training templates), on the held-out templates, on the task's off-template phrasings
(other lengths, see `bench.tools.offtemplate`) and on the test prompts after a sentence that no fit uses (`SHIFT`: every
token a few positions later):

    python -m bench.tools.fit_probe --runs runs/extract-ioi-... \\
        --variants steps=100 steps=100,jitter=2,every_length=0 \\
        --device cuda --out results/fit-probe-smollm2-135m.md
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from bench.core.metrics import accuracy
from bench.core.pipeline import evaluate_models, prepare_run
from bench.core.fitting import FILLERS, FitOptions, fit_means
from bench.core.match import read_run
from bench.tools.offtemplate import score_pruned
from bench.core.rundir import write_report
from models.generate import hf_last_logits
from models.pruned import count_params_of
from models.surgery import prune, pruned_config
from models.types import BenchError
from tasks.base import bos_prefix, encode
from tasks.data import Split

SHIFT = "She looked out of the window for a while.\n"
assert SHIFT.strip() not in FILLERS  # the shift must be one no fit has seen
FIELDS = {"steps": int, "lr": float, "batch_size": int, "jitter": int, "every_length": lambda v: bool(int(v)),
          "pool": int, "check_every": int}


def parse_variant(text: str, base: FitOptions) -> FitOptions:
    """'steps=100,jitter=2' -> `base` with those fields."""
    try:
        pairs = dict(part.split("=", 1) for part in text.split(","))
        return replace(base, **{k: FIELDS[k](v) for k, v in pairs.items()})
    except (ValueError, KeyError):
        raise BenchError(f"bad --variants entry {text!r}: use key=value pairs joined by commas, keys "
                         f"{', '.join(FIELDS)}, e.g. steps=100,jitter=2") from None


def shifted(split: Split, tok) -> Split:
    """`split`'s prompts after `SHIFT` (behind the BOS where there is one)."""
    pre, b = tuple(encode(tok, SHIFT)), len(bos_prefix(tok))
    return Split(f"{split.name}-shifted", tuple(replace(e, input_ids=e.input_ids[:b] + pre + e.input_ids[b:])
                                                 for e in split.examples))


def score(p, pruned, full_params: dict, n: int, seed: int) -> dict:
    """The pruned model's (and the full model's) accuracy and KL on every probe set."""
    full_fn, pruned_fn = hf_last_logits(p.model), (lambda ids: pruned(ids.to(p.device), last_only=True))
    m = evaluate_models(p.task, p.tokenizer, p.model, pruned, p.dm, full_params, 0)  # off-template: its own, below
    off = [r for r in score_pruned(p.task, p.model, p.tokenizer, pruned, n, seed, p.device) if "refused" not in r]
    shift = shifted(p.dm.test, p.tokenizer)
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows) if rows else float("nan")  # noqa: E731
    return {"test": m["pruned"]["test_accuracy"], "heldout": m["pruned"]["heldout_accuracy"],
            "offtemplate": mean(off, "pruned_accuracy"), "shifted": accuracy(p.task, p.tokenizer, pruned_fn, shift),
            "test_kl": m["pruned"]["test_kl_to_full"], "heldout_kl": m["pruned"]["heldout_kl_to_full"],
            "offtemplate_kl": mean(off, "kl_to_full"),
            "full": {"test": m["full"]["test_accuracy"], "heldout": m["full"]["heldout_accuracy"],
                     "offtemplate": mean(off, "full_accuracy"),
                     "shifted": accuracy(p.task, p.tokenizer, full_fn, shift)},
            "cut": 1 - m["pruned"]["non_embedding"] / m["full"]["non_embedding"]}


def probe_run(run: Path, variants: list[str], device: str, n: int) -> list[dict]:
    """One row per fit setting for the circuit of `run` (a `bench extract` run directory)."""
    saved = read_run(run)  # the circuit and the run's own prompts, whatever the registry holds now
    args, p = prepare_run(saved, device)
    removed = frozenset(saved.circuit.removed())
    full_params = count_params_of(pruned_config(p.model, (), p.means))
    rows = []
    for text in variants:
        options = parse_variant(text, args.fit)
        fitted, info = fit_means(p.model, p.task, p.tokenizer, p.dm, removed, p.means, options, args.seed)
        pruned = prune(p.model, removed, fitted, meta={"task": args.task, "model": args.model})
        with torch.inference_mode():
            rows.append({"run": str(run), "task": args.task, "alpha": args.alpha, "variant": text, "fit": info,
                         **score(p, pruned, full_params, n, args.seed)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], argv: list[str]) -> str:
    lines = ["# Fit settings against generalisation", "",
             f"Command: `python -m bench.tools.fit_probe {' '.join(argv)}`", "",
             "Accuracy of each pruned model (the full model's in brackets); off-template: the mean over the task's "
             "off-template phrasings in both orders; shifted: the test prompts after one sentence no fit uses.", "",
             "| task | α | cut | fit | test | held-out | off-template | shifted | test / held-out / off KL | fit s |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        f = r["full"]
        cells = [f"{r[k]:.1%} ({f[k]:.0%})" for k in ("test", "heldout", "offtemplate", "shifted")]
        lines.append(f"| {r['task']} | {r['alpha']:g} | {r['cut']:.1%} | {r['variant']} | {' | '.join(cells)} | "
                     f"{r['test_kl']:.3f} / {r['heldout_kl']:.3f} / {r['offtemplate_kl']:.3f} | "
                     f"{r['fit']['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.tools.fit_probe", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="`bench extract` run directories")
    p.add_argument("--variants", nargs="+", required=True, help="fit settings, e.g. steps=100,jitter=2")
    p.add_argument("--n", type=int, default=100, help="prompts per off-template phrasing")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the markdown report here too")
    args = p.parse_args(argv)
    try:
        for text in args.variants:
            parse_variant(text, FitOptions(1, 1.0, 1))
        rows = [row for run in args.runs for row in probe_run(Path(run), args.variants, args.device, args.n)]
    except BenchError as e:
        p.exit(2, f"error: {e}\n")
    text = markdown(rows, argv)
    write_report(text, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
