"""Plain values handed between extraction, pruning and comparison."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path



class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


@dataclass(frozen=True)
class Scheme:
    """An ablation scheme: what a removed head's z or MLP's output is replaced with. The hooks, the pruned model,
    the fit of the constants and the TransformerLens reference all ask this object, so a new scheme is one entry
    in SCHEMES."""

    name: str
    help: str
    positional: bool  # one constant per position: the model then takes only the patching prompts' lengths
    constants: bool  # False: a removed component leaves nothing, so there is nothing to collect or fit

    def rows(self, t: int) -> int:
        """Rows of constants taken over t-token prompts."""
        return t if self.positional else 1

    @property
    def dims(self) -> tuple[int, ...]:
        """The dimensions of (N, T, ...) activations that one constant averages over."""
        return (0,) if self.positional else (0, 1)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("mean", "one mean per position (the paper's): only the patching prompts' length", True, True),
    Scheme("mean-pooled", "one mean over every patching prompt and position: any prompt length", False, True),
    Scheme("zero", "zero: nothing left where a component was", False, False),
)}
BARE = "zero"  # the scheme of a model with nothing removed or folded (a teacher, a student): no constants


def scheme(name: str) -> Scheme:
    """The scheme called `name`; an unknown one -> BenchError."""
    if name not in SCHEMES:
        raise BenchError(f"unknown ablation scheme {name!r}; use one of: {', '.join(SCHEMES)}")
    return SCHEMES[name]


def length_error(t: int, lo: int, hi: int) -> str:
    """Why a per-position ablated model refuses a t-token input: its constants cover lo..hi tokens only."""
    span = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return (f"this model was pruned with per-position means (--ablation mean) for {span}-token inputs and cannot "
            f"take a {t}-token input; extract with --ablation mean-pooled for inputs of any length")


@dataclass(frozen=True, order=True)
class Component:
    """One candidate of Algorithm 1: attention head `head` of `layer`, or the MLP of `layer` (head=None)."""

    layer: int
    head: int | None = None

    @property
    def is_mlp(self) -> bool:
        return self.head is None

    def __str__(self) -> str:
        return f"L{self.layer}.MLP" if self.is_mlp else f"L{self.layer}.H{self.head}"


def candidate_order(n_layers: int, n_heads: int, include_mlps: bool) -> list[Component]:
    """Algorithm 1's order: last layer to first; each layer's heads, then its MLP."""
    order: list[Component] = []
    for layer in reversed(range(n_layers)):
        order += [Component(layer, h) for h in range(n_heads)]
        if include_mlps:
            order.append(Component(layer))
    return order


@dataclass(frozen=True)
class Circuit:
    """What Algorithm 1 kept. Everything not listed is ablated (heads always; MLPs only if include_mlps)."""

    model: str
    task: str
    alpha: float
    ablation: str
    include_mlps: bool
    seed: int
    n_layers: int
    n_heads: int
    heads: tuple[tuple[int, int], ...]
    mlps: tuple[int, ...]
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        scheme(self.ablation)
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise BenchError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        for layer, head in self.heads:
            if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
                raise BenchError(f"head ({layer}, {head}) is outside a {self.n_layers}x{self.n_heads} model")
        if any(not 0 <= m < self.n_layers for m in self.mlps):
            raise BenchError(f"an MLP index in {self.mlps} is outside a {self.n_layers}-layer model")

    @classmethod
    def from_removed(cls, removed: set[Component], **kw) -> "Circuit":
        n_layers, n_heads = kw["n_layers"], kw["n_heads"]
        heads = tuple((l, h) for l in range(n_layers) for h in range(n_heads) if Component(l, h) not in removed)
        mlps = tuple(l for l in range(n_layers) if Component(l) not in removed)
        return cls(heads=heads, mlps=mlps, **kw)

    def kept_heads(self, layer: int) -> list[int]:
        return [h for l, h in self.heads if l == layer]

    def removed(self) -> set[Component]:
        kept = set(self.heads)
        out = {Component(l, h) for l in range(self.n_layers) for h in range(self.n_heads) if (l, h) not in kept}
        return out | {Component(l) for l in range(self.n_layers) if l not in self.mlps}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = [list(x) for x in self.heads]
        d["mlps"] = list(self.mlps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Circuit":
        try:
            d = dict(d)
            d["heads"] = tuple((int(l), int(h)) for l, h in d["heads"])
            d["mlps"] = tuple(int(m) for m in d["mlps"])
            return cls(**d)
        except BenchError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise BenchError(f"not a valid circuit ({type(e).__name__}: {e}); re-run `bench extract`") from None

    def to_json(self) -> str:
        """One key a line, lists kept compact ([[layer, head], ...]); byte-identical for equal circuits."""
        d = self.to_dict()
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(d[k], sort_keys=True)}" for k in sorted(d))
        return "{\n" + body + "\n}\n"

    @classmethod
    def load(cls, path: str | Path) -> "Circuit":
        return cls.from_dict(read_json(path))


def read_json(path: str | Path) -> dict:
    """Read a JSON object, turning a missing or corrupt file into one clear BenchError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path} is corrupt ({e}); re-create it with `bench extract`") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} is corrupt (expected a JSON object); re-create it with `bench extract`")
    return data
