"""The fast scorer: Algorithm 1's KLs without a full forward per candidate.

Algorithm 1 goes from the last layer down, so when layer l's components are tried every layer below l
is intact. A forward for a candidate therefore starts at layer l from the full model's cached residual
stream, reuses layer l's per-head outputs (computed once), and runs the layers above as truly pruned
blocks, which cost nothing for what is already removed. Only the last position is unembedded.
`FastScorer(removed)` is a pure function of `removed`, like `HookScorer`, so the two can be compared.
The cached activations are per batch of validation prompts and bounded like every `BatchedScorer`'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from models import arch
from models.ablation import Means
from models.pruned import Block, PrunedModel, last_attention, run_to_last
from models.search import BatchedScorer, kl_rows, nbytes
from models.surgery import fill_block, prune, pruned_config
from models.types import Component


@dataclass
class _Acts:
    """What one batch of validation prompts needs for every candidate: the full model's residual stream entering
    each layer, its last-position logits, and the per-head outputs of the layer now being decided."""

    resid: list[torch.Tensor]  # (B, T, d) per layer
    ref: torch.Tensor  # (B, V)
    n_heads: int
    heads: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (nh, B, T, d), one layer at a time

    @property
    def nbytes(self) -> int:  # one layer's head outputs are counted up front: they come with the first candidate
        return nbytes(self.resid) + nbytes(self.ref) + self.n_heads * nbytes(self.resid[0])


class FastScorer(BatchedScorer):
    def __init__(self, model: nn.Module, ids: torch.Tensor | list[torch.Tensor], means: Means,
                 batch_size: int | None = None, cache_bytes: float = math.inf, bins: list[int] | None = None):
        self.model, self.means, self.shape = model, means, arch.check_supported(model)
        super().__init__(ids, batch_size, cache_bytes, bins)
        for b in self.batches:
            means.check_length(b.shape[1])
        self.base: PrunedModel = prune(model, (), means)  # full weights, our module form
        self._tail: dict[int, tuple[frozenset, Block]] = {}
        self._ablated: tuple[tuple[int, int], torch.Tensor] | None = None  # ((layer, T), (nh, T, d))
        self._ropes: dict[int, object] = {}

    def rope(self, t: int):
        """The rotary tables of a t-token input, the same for every batch of that length."""
        if t not in self._ropes:
            p = next(self.model.parameters())
            self._ropes[t] = self.base.embed(torch.zeros(1, t, dtype=torch.long, device=p.device))[1]
        return self._ropes[t]

    @torch.inference_mode()
    def build(self, ids: torch.Tensor) -> _Acts:
        x, rope = self.base.embed(ids.to(next(self.model.parameters()).device))[0], self.rope(ids.shape[1])
        resid = []
        for block in self.base.blocks:
            resid.append(x)
            x = block(x, rope)
        return _Acts(resid, self.base.unembed(x[:, -1]), self.shape.n_heads)

    def batch_rows(self, removed: frozenset[Component], i: int, ids: torch.Tensor) -> torch.Tensor:
        self.count(i)
        if not removed:
            return torch.zeros(ids.shape[0], dtype=torch.float64)
        acts = self.cache.get(i, ids)
        layer = min(c.layer for c in removed)  # every layer below it is intact
        tail = [self._block(l, removed) for l in range(layer + 1, self.shape.n_layers)]
        with torch.inference_mode():
            # With no attention left above, positions no longer mix: the last one only, from this layer on.
            x = self._layer_out(acts, layer, removed, last_only=last_attention(tail) < 0)
            x = run_to_last(tail, x, self.rope(ids.shape[1]), ids.shape[1])
            return kl_rows(acts.ref, self.base.unembed(x[:, -1]))

    def batch_rows_many(self, states: list[frozenset[Component]], i: int, ids: torch.Tensor) -> list[torch.Tensor]:
        """`batch_kl` of states that differ only in one layer (a speculative step's): that layer's output for each
        state, stacked along the batch, through the layers above (the same blocks for all) in one pass."""
        if len(states) == 1 or not all(states):
            return super().batch_rows_many(states, i, ids)
        self.forwards += len(states) * (i == 0)
        acts = self.cache.get(i, ids)
        layer = min(c.layer for c in states[0])
        above = {c for c in states[0] if c.layer > layer}
        if any(min(c.layer for c in s) != layer or {c for c in s if c.layer > layer} != above for s in states):
            raise ValueError("batch_rows_many runs together only states that differ in their lowest layer")
        tail = [self._block(l, states[0]) for l in range(layer + 1, self.shape.n_layers)]
        with torch.inference_mode():
            last_only = last_attention(tail) < 0
            x = torch.cat([self._layer_out(acts, layer, s, last_only) for s in states])  # (len(states) B, T, d)
            x = run_to_last(tail, x, self.rope(ids.shape[1]), ids.shape[1])
            logits = self.base.unembed(x[:, -1]).split(ids.shape[0])  # len(states) x (B, V)
            return [kl_rows(acts.ref, z) for z in logits]

    def _head_outputs(self, acts: _Acts, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's output, (nh, B, T, d), and each head's ablated output, (nh, T, d), for `layer`."""
        block, s, t = self.base.blocks[layer], self.shape, acts.resid[layer].shape[1]
        wo = block.attn.o.weight.view(s.d_model, s.n_heads, s.head_dim)  # (d, nh, hd)
        if layer not in acts.heads:
            z = block.attn.heads_z(block.ln1(acts.resid[layer]), self.rope(t))  # (B, nh, T, hd)
            acts.heads = {layer: torch.einsum("nhtk,dhk->hntd", z, wo)}
        if self._ablated is None or self._ablated[0] != (layer, t):
            self._ablated = ((layer, t), torch.einsum("thk,dhk->htd", self.means.z_rows(layer, 0, t).to(wo), wo))
        return acts.heads[layer], self._ablated[1]

    def _layer_out(self, acts: _Acts, layer: int, removed: frozenset[Component], last_only: bool) -> torch.Tensor:
        """The residual stream leaving `layer` with its removed heads and MLP ablated, (B, T, d),
        or (B, 1, d) at the last position when nothing above mixes positions."""
        outs, ablated = self._head_outputs(acts, layer)
        gone = torch.tensor([Component(layer, h) in removed for h in range(self.shape.n_heads)],
                            device=outs.device)  # (nh,)
        attn = torch.where(gone[:, None, None, None], ablated[:, None], outs).sum(0)  # (B, T, d)
        block = self.base.blocks[layer]
        if block.attn.o.bias is not None:
            attn = attn + block.attn.o.bias
        x = acts.resid[layer] + (attn if block.post1 is None else block.post1(attn))
        source = acts.resid[layer] if self.shape.parallel_residual else x  # what the MLP reads
        if last_only:
            x, source = x[:, -1:], source[:, -1:]
        if Component(layer) in removed:
            t = acts.resid[layer].shape[1]
            m = self.means.mlp_rows(layer, t - x.shape[1], t).to(x)
        else:
            m = block.mlp(block.ln2(source))
        return x + (m if block.post2 is None else block.post2(m))

    def _block(self, layer: int, removed: frozenset[Component]) -> Block:
        """Layer `layer` truly pruned to `removed`, rebuilt only when its part of `removed` changes."""
        key = frozenset(c for c in removed if c.layer == layer)
        cached = self._tail.get(layer)
        if cached is None or cached[0] != key:
            cfg = pruned_config(self.model, key, self.means)
            p = next(self.model.parameters())
            block = Block(cfg, layer).to(device=p.device, dtype=p.dtype)
            fill_block(block, arch.blocks(self.model)[layer], self.shape, cfg, self.means, layer)
            self._tail[layer] = cached = (key, block)
        return cached[1]
