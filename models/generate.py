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


def hf_last_logits(model: torch.nn.Module) -> LogitsFn:
    device = next(model.parameters()).device
    return lambda ids: model(ids.to(device), logits_to_keep=1).logits[:, -1]  # (N, V), no (N, T, V) logits
