"""The `bench` command: one typed function per verb, wired by jsonargparse."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from argparse import ArgumentError

from jsonargparse import ArgumentParser
from rich.console import Console
from rich.table import Table

from models.types import BenchError

VERBS = ("extract", "evaluate", "distill")


def _arg_classes() -> dict:
    from bench.evaluate_run import EvaluateArgs
    from bench.distill import DistillArgs
    from bench.extract import ExtractArgs

    return {"extract": ExtractArgs, "evaluate": EvaluateArgs, "distill": DistillArgs}


def normalise(argv: list[str]) -> list[str]:
    """Accept --n-patching for --n_patching, and --flag / --no-flag for booleans."""
    out: list[str] = []
    for i, a in enumerate(argv):
        if not a.startswith("--") or a in ("--help",):
            out.append(a)
            continue
        key, eq, value = a[2:].partition("=")
        key = key.replace("-", "_")
        nxt = argv[i + 1] if i + 1 < len(argv) else "--"
        if key.startswith("no_") and not eq:
            out.append(f"--{key[3:]}=false")
        elif key in ("include_mlps", "overwrite", "resume") and not eq and nxt.startswith("--"):
            out.append(f"--{key}=true")
        else:
            out.append(f"--{key}{eq}{value}")
    return out


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="bench", description="circuit-bench: task-specific circuits vs distillation",
                       exit_on_error=False)
    sub = p.add_subcommands(dest="verb")
    for verb, cls in _arg_classes().items():
        sp = ArgumentParser(exit_on_error=False)
        sp.add_class_arguments(cls)
        sub.add_subcommand(verb, sp, help=(cls.__doc__ or "").splitlines()[0])
    return p


def print_extract(out, console: Console) -> None:
    import json

    m = json.loads((out / "metrics.json").read_text())
    c = json.loads((out / "circuit.json").read_text())
    full, pruned = m["full"], m["pruned"]
    t = Table(title=f"{c['task']} on {c['model']}  (alpha={c['alpha']}, {c['ablation']} ablation)")
    for col in ("", "non-emb. params", "test accuracy", "KL to full"):
        t.add_column(col, justify="right")
    t.add_row("full", f"{full['non_embedding']:,}", f"{full['test_accuracy']:.1%}", "0")
    cut = 1 - pruned["non_embedding"] / full["non_embedding"]
    t.add_row("circuit", f"{pruned['non_embedding']:,} (-{cut:.1%})", f"{pruned['test_accuracy']:.1%}",
              f"{pruned['test_kl_to_full']:.4f}")
    console.print(t)
    console.print(f"kept {len(c['heads'])} heads, {len(c['mlps'])} MLPs; search {m['search']['wall_s']:.0f} s; run: {out}")


def run(argv: list[str]) -> int:
    cfg = parser().parse_args(normalise(argv))
    verb = cfg.verb
    if verb is None:
        raise BenchError(f"give a verb: bench {{{','.join(VERBS)}}} --help")
    args = _arg_classes()[verb](**{k: v for k, v in vars(cfg[verb]).items() if k != "__path__"})
    if verb == "extract":
        from bench.extract import extract

        print_extract(extract(args), Console())
    elif verb == "evaluate":
        from bench.evaluate_run import evaluate

        r = evaluate(args)
        Console().print(f"{r['task']} on {r['model']}: pruned model test accuracy {r['test_accuracy']:.1%} "
                        f"on {r['n_test']} prompts")
    elif verb == "distill":
        from bench.distill import distill, print_distill

        print_distill(distill(args), Console())
    return 0


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
    except ArgumentError as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {msg} (see: bench {argv[0] if argv else ''} --help)", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
