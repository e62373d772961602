"""Greedy decoding over any `(N, T) ids -> (N, V) last-position logits` function."""
from __future__ import annotations

from typing import Callable

import torch

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def greedy(logits_fn: LogitsFn, ids: torch.Tensor, n_new: int) -> torch.Tensor:
    """The n_new greedily chosen next tokens, (N, n_new)."""
    out = []
    for _ in range(n_new):
        nxt = logits_fn(ids).argmax(-1)  # (N,)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None].to(ids)], dim=1)
    return torch.stack(out, dim=1) if out else ids.new_zeros(ids.shape[0], 0)


@torch.inference_mode()
def cached_greedy(model, ids: torch.Tensor, n_new: int) -> torch.Tensor:
    """`greedy` through a PrunedModel's KV cache: the prompt once, then one position per token, (N, n_new)."""
    logits, cache = model.cached(ids)
    out = [logits[:, -1].argmax(-1)]  # (N,) each
    while len(out) < n_new:
        logits, cache = model.cached(out[-1][:, None], cache)
        out.append(logits[:, -1].argmax(-1))
    return torch.stack(out[:n_new], dim=1)


@torch.inference_mode()
def hf_greedy(model: torch.nn.Module, ids: torch.Tensor, n_new: int) -> torch.Tensor:
    """`greedy` by a Hugging Face model's own generate() with its KV cache, (N, n_new)."""
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, min_new_tokens=n_new,
                         do_sample=False)
    return out[:, ids.shape[1]:]


def hf_last_logits(model: torch.nn.Module) -> LogitsFn:
    device = next(model.parameters()).device
    return lambda ids: model(ids.to(device), logits_to_keep=1).logits[:, -1]  # (N, V), no (N, T, V) logits
