"""Hook-based ablation of a HF model: the plain, reference path of Algorithm 1.

A head's output is its slice of z, the input of the attention output projection: ablating head h of
layer l replaces z[:, :, h] with its per-position mean over the patching set (or zero). An ablated MLP's
output is replaced likewise. Hooks live only inside `ablated(...)`, so nothing leaks between steps.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from models import arch
from models.types import Component


@dataclass(frozen=True)
class Means:
    """What an ablated component is replaced with, per position."""

    z: torch.Tensor  # (L, T, nh, hd)
    mlp: torch.Tensor  # (L, T, d)
    scheme: str  # "mean" | "zero"

    @property
    def n_positions(self) -> int:
        return self.z.shape[1]


@torch.inference_mode()
def collect_means(model: nn.Module, ids: torch.Tensor, scheme: str) -> Means:
    """Per-position means of every head's z and every MLP's output over `ids` (N, T); zeros for "zero"."""
    s = arch.shape_of(model)
    n, t = ids.shape
    kw = dict(dtype=_dtype(model), device=_device(model))
    z = torch.zeros(s.n_layers, t, s.n_heads, s.head_dim, **kw)
    out = torch.zeros(s.n_layers, t, s.d_model, **kw)
    if scheme == "zero":
        return Means(z, out, scheme)
    handles = []
    for l, block in enumerate(arch.blocks(model)):
        def grab_z(mod, args, l=l):
            z[l] = args[0].float().mean(0).view(t, s.n_heads, s.head_dim).to(z.dtype)

        def grab_mlp(mod, args, output, l=l):
            out[l] = output.float().mean(0).to(out.dtype)
        handles += [arch.out_proj(block).register_forward_pre_hook(grab_z),
                    arch.mlp(block).register_forward_hook(grab_mlp)]
    try:
        model(ids.to(_device(model)))
    finally:
        for h in handles:
            h.remove()
    return Means(z, out, scheme)


@contextmanager
def ablated(model: nn.Module, removed: Iterable[Component], means: Means) -> Iterator[nn.Module]:
    """Inside the context, `model` runs with every component in `removed` ablated."""
    s = arch.shape_of(model)
    layers = arch.blocks(model)
    heads: dict[int, list[int]] = {}
    for c in removed:
        if not c.is_mlp:
            heads.setdefault(c.layer, []).append(c.head)
    handles = []
    for l, hs in heads.items():
        def patch_z(mod, args, l=l, hs=sorted(hs)):
            z = args[0]  # (B, T, nh*hd)
            b, t = z.shape[:2]
            z = z.view(b, t, s.n_heads, s.head_dim).clone()
            z[:, :, hs] = means.z[l, :t, hs].to(z.device, z.dtype)
            return (z.view(b, t, -1),) + tuple(args[1:])
        handles.append(arch.out_proj(layers[l]).register_forward_pre_hook(patch_z))
    for c in removed:
        if c.is_mlp:
            def patch_mlp(mod, args, output, l=c.layer):
                t = output.shape[1]
                return means.mlp[l, :t].to(output.device, output.dtype).expand_as(output)
            handles.append(arch.mlp(layers[c.layer]).register_forward_hook(patch_mlp))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def hooked_logits(model: nn.Module, ids: torch.Tensor, removed: Iterable[Component], means: Means,
                  last_only: bool = True) -> torch.Tensor:
    """Logits of the ablated model: (N, V) at the last position, or (N, T, V)."""
    with ablated(model, removed, means):
        logits = model(ids.to(_device(model))).logits
    return logits[:, -1] if last_only else logits


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
