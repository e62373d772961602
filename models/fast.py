"""The fast scorer: Algorithm 1's KLs without a full forward per candidate.

Algorithm 1 goes from the last layer down, so when layer l's components are tried every layer below l
is intact. A forward for a candidate therefore starts at layer l from the full model's cached residual
stream, reuses layer l's per-head outputs (computed once), and runs the layers above as truly pruned
blocks, which cost nothing for what is already removed. Only the last position is unembedded.
`FastScorer(removed)` is a pure function of `removed`, like `HookScorer`, so the two can be compared.
"""
from __future__ import annotations

import torch
from torch import nn

from models import arch
from models.ablation import Means
from models.pruned import Block, PrunedModel, last_attention, run_to_last
from models.search import kl_last
from models.surgery import fill_block, prune, pruned_config
from models.types import Component


class FastScorer:
    def __init__(self, model: nn.Module, ids: torch.Tensor, means: Means):
        self.model, self.means, self.shape = model, means, arch.check_supported(model)
        means.check_length(ids.shape[1])
        self.base: PrunedModel = prune(model, (), means)  # full weights, our module form
        with torch.inference_mode():
            x, self.rope = self.base.embed(ids.to(next(model.parameters()).device))
            self.resid = []  # residual stream entering each layer, (N, T, d) each
            for block in self.base.blocks:
                self.resid.append(x)
                x = block(x, self.rope)
            self.ref = self.base.unembed(x[:, -1])  # (N, V)
        self.t = ids.shape[1]
        self._tail: dict[int, tuple[frozenset, Block]] = {}
        self._layer: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self.forwards = 0

    def __call__(self, removed: frozenset[Component]) -> float:
        self.forwards += 1
        if not removed:
            return 0.0
        layer = min(c.layer for c in removed)  # every layer below it is intact
        tail = [self._block(l, removed) for l in range(layer + 1, self.shape.n_layers)]
        with torch.inference_mode():
            # With no attention left above, positions no longer mix: the last one only, from this layer on.
            x = self._layer_out(layer, removed, last_only=last_attention(tail) < 0)
            x = run_to_last(tail, x, self.rope, self.t)
            return kl_last(self.ref, self.base.unembed(x[:, -1]))

    def _head_outputs(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's output, (nh, N, T, d), and each head's ablated output, (nh, T, d), for `layer`."""
        if self._layer is None or self._layer[0] != layer:
            block, s = self.base.blocks[layer], self.shape
            wo = block.attn.o.weight.view(s.d_model, s.n_heads, s.head_dim)  # (d, nh, hd)
            z = block.attn.heads_z(block.ln1(self.resid[layer]), self.rope)  # (N, nh, T, hd)
            outs = torch.einsum("nhtk,dhk->hntd", z, wo)
            ablated = torch.einsum("thk,dhk->htd", self.means.z_rows(layer, 0, self.t).to(wo), wo)
            self._layer = (layer, outs, ablated)
        return self._layer[1], self._layer[2]

    def _layer_out(self, layer: int, removed: frozenset[Component], last_only: bool) -> torch.Tensor:
        """The residual stream leaving `layer` with its removed heads and MLP ablated, (N, T, d),
        or (N, 1, d) at the last position when nothing above mixes positions."""
        outs, ablated = self._head_outputs(layer)
        gone = torch.tensor([Component(layer, h) in removed for h in range(self.shape.n_heads)],
                            device=outs.device)  # (nh,)
        attn = torch.where(gone[:, None, None, None], ablated[:, None], outs).sum(0)  # (N, T, d)
        block = self.base.blocks[layer]
        if block.attn.o.bias is not None:
            attn = attn + block.attn.o.bias
        x = self.resid[layer] + attn
        if last_only:
            x = x[:, -1:]
        if Component(layer) in removed:
            return x + self.means.mlp_rows(layer, self.t - x.shape[1], self.t).to(x)
        return x + block.mlp(block.ln2(x))

    def _block(self, layer: int, removed: frozenset[Component]) -> Block:
        """Layer `layer` truly pruned to `removed`, rebuilt only when its part of `removed` changes."""
        key = frozenset(c for c in removed if c.layer == layer)
        cached = self._tail.get(layer)
        if cached is None or cached[0] != key:
            cfg = pruned_config(self.model, key, self.means)
            ref = self.resid[0]
            block = Block(cfg, layer).to(device=ref.device, dtype=ref.dtype)
            fill_block(block, arch.blocks(self.model)[layer], self.shape, cfg, self.means, layer)
            self._tail[layer] = cached = (key, block)
        return cached[1]
