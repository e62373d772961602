"""Hook-based ablation of a HF model: the plain, reference path of Algorithm 1.

A head's output is its slice of z, the input of the attention output projection: ablating head h of
layer l replaces z[:, :, h] with its mean over the patching set (or zero). An ablated MLP's output is
replaced likewise. Schemes (`models.types.SCHEMES`), for example:
  mean         one mean per position (the paper's); only prompts of the patching prompts' length fit it;
  mean-pooled  one mean over every patching prompt and every position, so any prompt length fits;
  zero         zero.
Hooks live only inside `ablated(...)`, so nothing leaks between steps.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import torch
from torch import nn

from models import arch
from models.types import BARE, BenchError, Component, length_error, scheme


@dataclass(frozen=True)
class Means:
    """What an ablated component is replaced with: P rows, one per position for the positional scheme
    (P = the longest length it covers), one row that fits every position otherwise."""

    z: torch.Tensor  # (L, P, nh, hd)
    mlp: torch.Tensor  # (L, P, d)
    scheme: str  # see SCHEMES
    min_len: int = 1  # positional: the shortest input it covers (the prompts' length; P also covers answers)

    @property
    def positional(self) -> bool:
        return scheme(self.scheme).positional

    @property
    def n_positions(self) -> int:
        return self.z.shape[1]

    def to(self, device, dtype: torch.dtype | None = None) -> "Means":
        return replace(self, z=self.z.to(device, dtype), mlp=self.mlp.to(device, dtype))

    def check_length(self, t: int) -> None:
        """Per-position constants only fit the positions they were taken at: any other length is refused."""
        if self.positional and not self.min_len <= t <= self.n_positions:
            raise BenchError(length_error(t, self.min_len, self.n_positions))

    def z_rows(self, layer: int, start: int, stop: int) -> torch.Tensor:
        """(stop - start, nh, hd): the replacement z at positions start..stop-1."""
        z = self.z[layer]
        return z[start:stop] if self.positional else z[:1].expand(stop - start, *z.shape[1:])

    def mlp_rows(self, layer: int, start: int, stop: int) -> torch.Tensor:
        """(stop - start, d): the replacement MLP output at positions start..stop-1."""
        m = self.mlp[layer]
        return m[start:stop] if self.positional else m[:1].expand(stop - start, m.shape[1])


def no_means() -> Means:
    """Means for a model with nothing removed: no constants, any input length."""
    return Means(torch.zeros(0, 1, 0, 0), torch.zeros(0, 1, 0), BARE)


@torch.inference_mode()
def collect_means(model: nn.Module, ids: torch.Tensor | list[torch.Tensor], name: str, min_len: int | None = None,
                  batch_size: int | None = None) -> Means:
    """Means of every head's z and every MLP's output over `ids` (N, T), or over groups of prompts of other lengths
    (position-free schemes only), as the scheme called `name` takes them (per position, or over every position too;
    zeros for a scheme without constants). `min_len` (default T) is the prompt length when `ids` also holds answer
    tokens, so that the positional means cover prompts of min_len..T tokens. The prompts go through in batches of
    `batch_size` (default: a group at once); each batch's fp32 sums are added up in float64, so the means do not
    depend on the batch size beyond fp32 summation order."""
    sc = scheme(name)
    groups = [ids] if isinstance(ids, torch.Tensor) else list(ids)
    if sc.positional and len({g.shape[1] for g in groups}) > 1:
        raise BenchError(f"per-position means ({name}) take prompts of one length; give one group, or a "
                         "position-free scheme")
    s, t = arch.shape_of(model), groups[0].shape[1]
    rows = sc.rows(t)
    z = torch.zeros(s.n_layers, rows, s.n_heads * s.head_dim, dtype=torch.float64)  # on the CPU: MPS has no float64
    out = torch.zeros(s.n_layers, rows, s.d_model, dtype=torch.float64)
    for g in groups if sc.constants else []:
        _sum_outputs(model, g, sc.dims, z, out, batch_size or max(1, g.shape[0]))
    count = sum(g.shape[0] * g.shape[1] for g in groups) // rows  # the activations behind each row
    kw = dict(dtype=_dtype(model), device=_device(model))
    return Means((z / count).view(s.n_layers, rows, s.n_heads, s.head_dim).to(**kw), (out / count).to(**kw),
                 name, t if min_len is None else min_len)


def _sum_outputs(model: nn.Module, ids: torch.Tensor, dims: tuple[int, ...], z: torch.Tensor, out: torch.Tensor,
                 batch_size: int) -> None:
    """Add every layer's z (into z, (L, P, nh*hd)) and MLP output (into out, (L, P, d)) summed over the prompts
    of `ids` (dims (0,)), or over positions too (dims (0, 1))."""
    handles = []
    for l, block in enumerate(arch.blocks(model)):
        def grab_z(mod, args, l=l):
            z[l] += args[0].float().sum(dims).view(z.shape[1:]).cpu().double()

        def grab_mlp(mod, args, output, l=l):
            out[l] += output.float().sum(dims).view(out.shape[1:]).cpu().double()
        handles += [arch.out_proj(model, block).register_forward_pre_hook(grab_z),
                    arch.mlp(model, block).register_forward_hook(grab_mlp)]
    try:
        for batch in ids.split(batch_size):
            model(batch.to(_device(model)), logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()


@contextmanager
def ablated(model: nn.Module, removed: Iterable[Component], means: Means) -> Iterator[nn.Module]:
    """Inside the context, `model` runs with every component in `removed` ablated."""
    s = arch.shape_of(model)
    layers = arch.blocks(model)
    removed = list(removed)
    heads: dict[int, list[int]] = {}
    for c in removed:
        if not c.is_mlp:
            heads.setdefault(c.layer, []).append(c.head)
    handles = []
    for l, hs in heads.items():
        def patch_z(mod, args, l=l, hs=sorted(hs)):
            z = args[0]  # (B, T, nh*hd)
            b, t = z.shape[:2]
            means.check_length(t)
            z = z.view(b, t, s.n_heads, s.head_dim).clone()
            z[:, :, hs] = means.z_rows(l, 0, t)[:, hs].to(z.device, z.dtype)
            return (z.view(b, t, -1),) + tuple(args[1:])
        handles.append(arch.out_proj(model, layers[l]).register_forward_pre_hook(patch_z))
    for c in removed:
        if c.is_mlp:
            def patch_mlp(mod, args, output, l=c.layer):
                t = output.shape[1]
                means.check_length(t)
                return means.mlp_rows(l, 0, t).to(output.device, output.dtype).expand_as(output)
            handles.append(arch.mlp(model, layers[c.layer]).register_forward_hook(patch_mlp))
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
        logits = model(ids.to(_device(model)), logits_to_keep=1 if last_only else 0).logits
    return logits[:, -1] if last_only else logits


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
