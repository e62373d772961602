"""Analytic multiply-accumulate counts of the two Algorithm 1 engines: the arithmetic each one must do.

Counted: the weight matmuls (Q/K/V/O, MLP, unembedding); attention scores are left out (T² · hd per head,
under 1% at the prompt lengths here), as are norms and element-wise ops. The ratio of the two totals is
the speed-up an exact engine of that design can reach where matmuls dominate, as they do on CPU.
"""
from __future__ import annotations

from collections.abc import Iterable

from models.arch import Shape
from models.types import Component


def attn_macs(s: Shape, n_heads: int, n_kv: int) -> int:
    """Per position: Q and O for `n_heads` query heads, K and V for `n_kv` K/V heads."""
    return 2 * n_heads * s.head_dim * s.d_model + 2 * n_kv * s.head_dim * s.d_model


def mlp_macs(s: Shape) -> int:
    """Per position: gate, up and down for Llama (SwiGLU); up and down for GPT-2."""
    return s.mlp_matrices * s.d_model * s.d_mlp


def kept_heads(s: Shape, removed: frozenset[Component], layer: int) -> tuple[int, int]:
    """(query heads, K/V heads) left in `layer`."""
    heads = [h for h in range(s.n_heads) if Component(layer, h) not in removed]
    return len(heads), len({h // s.group for h in heads})


def reference_macs(s: Shape, n: int, t: int) -> int:
    """One full forward of n prompts of t tokens, with logits at every position (the HF model's output)."""
    return n * t * (s.n_layers * (attn_macs(s, s.n_heads, s.n_kv_heads) + mlp_macs(s)) + s.d_model * s.vocab_size)


def fast_macs(s: Shape, n: int, t: int, removed: frozenset[Component]) -> int:
    """One `FastScorer` call: the candidate layer's MLP (its heads' outputs are cached), the pruned layers
    above, every position up to the last attention left and the last position after it, last-position logits."""
    if not removed:
        return 0
    layer = min(c.layer for c in removed)
    above = [kept_heads(s, removed, m) for m in range(layer + 1, s.n_layers)]
    last_attn = max((i for i, (nq, _) in enumerate(above) if nq), default=-1)
    macs = 0 if Component(layer) in removed else (n * t if last_attn >= 0 else n) * mlp_macs(s)
    for i, (nq, nkv) in enumerate(above):
        macs += n * t * attn_macs(s, nq, nkv) if nq else 0
        if Component(layer + 1 + i) not in removed:
            macs += (n * t if i < last_attn else n) * mlp_macs(s)
    return macs + n * s.d_model * s.vocab_size


def search_macs(s: Shape, n: int, t: int, states: Iterable[frozenset[Component]]) -> tuple[int, int]:
    """(reference, fast) totals for scoring `states` (the search's first, empty state included). Each engine
    first runs the full model once for the reference logits (the fast engine keeps its residual stream and
    unembeds the last position only); the fast one also computes every head's output once per layer tried."""
    states = list(states)
    body = n * t * s.n_layers * (attn_macs(s, s.n_heads, s.n_kv_heads) + mlp_macs(s))
    layers = {min(c.layer for c in r) for r in states if r}
    heads_once = len(layers) * n * t * attn_macs(s, s.n_heads, s.n_kv_heads)
    fast = body + n * s.d_model * s.vocab_size + heads_once + sum(fast_macs(s, n, t, r) for r in states)
    return (len(states) + 1) * reference_macs(s, n, t), fast


# ---- build cost: what making a circuit or a student took, in forward MACs -------------------------------------
# A training step is its forward and its backward. The backward of a student computes the gradients of the
# activations and of the weights: twice the forward. The backward of the constants' fit computes those of the
# activations only (the weights are frozen, and a constant's gradient is a sum): once the forward.
STUDENT_STEP, FIT_STEP = 3, 2  # forwards' worth of MACs per training step


def pruned_macs(cfg, tokens: int, rows: int) -> int:
    """A forward of a PrunedModel config (`models.pruned.PrunedConfig`: kept heads and MLPs per layer) that carries
    `tokens` (prompt, position) pairs through every kept component and unembeds `rows` of them. A teacher or a
    student is a config with nothing removed; the constants of removed components are additions, not counted."""
    matrices = 3 if cfg.gated else 2
    per_token = sum(2 * (len(cfg.heads[l]) + len(cfg.kv_heads(l))) * cfg.head_dim * cfg.d_model
                    + (matrices * cfg.d_model * cfg.d_mlp if cfg.mlps[l] else 0) for l in range(cfg.n_layers))
    return tokens * per_token + rows * cfg.d_model * cfg.vocab_size
