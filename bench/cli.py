"""The `bench` command: one typed function per verb, wired by jsonargparse."""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import sys
import warnings
from argparse import ArgumentError
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator

from jsonargparse import ArgumentParser
from rich.console import Console

from models.types import BenchError


@dataclass(frozen=True)
class Verb:
    """Where a verb lives: its args dataclass, the function that runs it, the one that prints its result."""

    module: str
    args: str
    run: str
    show: str

    def load(self, name: str):
        return getattr(importlib.import_module(self.module), getattr(self, name))


VERBS = {
    "extract": Verb("bench.verbs.extract", "ExtractArgs", "extract", "print_extract"),
    "evaluate": Verb("bench.verbs.evaluate", "EvaluateArgs", "evaluate", "print_evaluate"),
    "distill": Verb("bench.verbs.distill", "DistillArgs", "distill", "print_distill"),
    "compare": Verb("bench.verbs.compare", "CompareArgs", "compare", "print_compare"),
    "sweep": Verb("bench.verbs.sweep", "SweepArgs", "sweep", "print_sweep"),
    "export": Verb("bench.verbs.export", "ExportArgs", "export", "print_export"),
}


def bool_flags() -> set[str]:
    """Every boolean option of every verb, so `--flag` alone means true."""
    return {f.name for spec in VERBS.values() for f in fields(spec.load("args")) if f.type in ("bool", bool)}


def list_flags() -> set[str]:
    return {f.name for spec in VERBS.values() for f in fields(spec.load("args")) if "list[" in str(f.type)}


def _yaml_item(text: str) -> str:
    """A number stays a number (NaN/inf in YAML spelling, so the args check rejects them in its words)."""
    try:
        x = float(text)
    except ValueError:
        return json.dumps(text)
    return ".nan" if math.isnan(x) else ("-.inf" if x < 0 else ".inf") if math.isinf(x) else repr(x)


def gather_list(argv: list[str], name: str) -> list[str]:
    """`--name a b` (values up to the next --flag) or `--name=a,b` -> `--name=[a, b]`, which jsonargparse parses."""
    out, i = [], 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag[2:].replace("-", "_") != name or not flag.startswith("--") or value.lstrip().startswith("["):
            out.append(argv[i])
            i += 1
            continue
        if eq:
            values, i = value.split(","), i + 1
        else:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values, i = argv[i + 1:j], j
        out.append(f"--{name}=[{', '.join(_yaml_item(v.strip()) for v in values if v.strip())}]")
    return out


def _non_finite(text: str) -> str:
    """NaN and inf in YAML spelling, so a float option gets them and its check answers in our words."""
    try:
        x = float(text)
    except ValueError:
        return text
    return _yaml_item(text) if not math.isfinite(x) else text


def _join_non_finite(argv: list[str]) -> list[str]:
    """`--alpha -inf` -> `--alpha=-.inf` (argparse would take -inf for an option)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv) and _non_finite(argv[i + 1]) != argv[i + 1]:
            out.append(f"{a}={_non_finite(argv[i + 1])}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


def normalise(argv: list[str]) -> list[str]:
    """Accept --n-patching for --n_patching, --flag / --no-flag for booleans, and --alphas a b for lists."""
    for name in list_flags():
        argv = gather_list(argv, name)
    argv = _join_non_finite(argv)
    flags, out = bool_flags(), []
    for i, a in enumerate(argv):
        if not a.startswith("--") or a in ("--help",):
            out.append(a)
            continue
        key, eq, value = a[2:].partition("=")
        key = key.replace("-", "_")
        value = _non_finite(value)
        nxt = argv[i + 1] if i + 1 < len(argv) else "--"
        if key.startswith("no_") and not eq:
            out.append(f"--{key[3:]}=false")
        elif key in flags and not eq and nxt.startswith("--"):
            out.append(f"--{key}=true")
        else:
            out.append(f"--{key}{eq}{value}")
    return out


_BOOL = re.compile(r"--(\w+) \{true,false(?:,null)?\}")
_FLAG = re.compile(r"--(\w+)")


def kebab(text: str) -> str:
    """Options as the README spells them: --n_val -> --n-val, --include_mlps {true,false} ->
    --include-mlps/--no-include-mlps."""
    text = _BOOL.sub(lambda m: "--{0}/--no-{0}".format(m[1].replace("_", "-")), text)
    return _FLAG.sub(lambda m: "--" + m[1].replace("_", "-"), text)


class Parser(ArgumentParser):
    """jsonargparse with its help and usage in kebab case (`normalise` maps the kebab spelling back)."""

    def format_help(self) -> str:
        return kebab(super().format_help())

    def format_usage(self) -> str:
        return kebab(super().format_usage())


def parser() -> ArgumentParser:
    p = Parser(prog="bench", description="circuit-bench: task-specific circuits vs distillation",
               exit_on_error=False)
    sub = p.add_subcommands(dest="verb")
    for verb, spec in VERBS.items():
        cls = spec.load("args")
        sp = Parser(exit_on_error=False)
        sp.add_class_arguments(cls)
        sub.add_subcommand(verb, sp, help=(cls.__doc__ or "").splitlines()[0])
    return p


def run(argv: list[str]) -> int:
    cfg = parser().parse_args(normalise(argv))
    verb = cfg.verb
    if verb is None:
        raise BenchError(f"give a verb: bench {{{','.join(VERBS)}}} --help")
    spec = VERBS[verb]
    args = spec.load("args")(**{k: v for k, v in vars(cfg[verb]).items() if k != "__path__"})
    spec.load("show")(spec.load("run")(args), Console())
    return 0


EXPECTED_WARNINGS = (  # benign and known, so the user sees only what needs them; everything else still shows
    r"`LightningModule.configure_optimizers` returned `None`",  # extraction optimises nothing, by design
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree shim on a newer torch
    r"Checkpoint directory .* exists and is not empty",  # distill --resume writes on into its own checkpoints
    r"Found \d+ module\(s\) in eval mode at the start of training",  # frozen models stay in eval mode, by design
)


@contextmanager
def expected_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def quiet_libraries() -> None:
    """No Lightning banner or tips, no transformers chatter, no tokenizers fork warning."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    argv = sys.argv[1:] if argv is None else argv
    try:
        with expected_warnings():
            return run(argv)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
    except ArgumentError as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        msg = kebab(re.sub(r'Parser key "(\w+)":', r"--\1:", msg))
        verb = argv[0] + " " if argv and argv[0] in VERBS else ""
        print(f"error: {msg} (see: bench {verb}--help)", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
