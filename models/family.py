"""What a family adapter provides, and the sizes and block flags it reads off a Hugging Face config.

A family (`models/families/NAME.py`) maps a HF model onto our parts: its blocks, each block's attention weights in
one canonical form, its MLP weights, its norms, and its embeddings. Everything downstream (hooks, true pruning,
the fast engine, parameter counts) works from those parts and the `Shape`'s independent flags, never from the
family's name.

Canonical form (nn.Linear convention, y = x @ W.T + b):
  Wq (nh*hd, d)  Wk, Wv (nkv*hd, d)  Wo (d, nh*hd)   biases may be None.
  MLP: W_in (d_mlp, d), W_out (d, d_mlp), W_gate (d_mlp, d) for gated MLPs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from models.types import BenchError

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu-tanh", "gelu", "gated-silu", "gated-gelu-tanh")  # down(act(up x)); down(act(gate x) * up x)
Weights = dict[str, "torch.Tensor | None"]


@dataclass(frozen=True)
class Shape:
    """The sizes, constants and block flags of a supported model, read off its HF config."""

    family: str  # the adapter's name, e.g. "gpt2", "llama", "qwen2"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    d_mlp: int
    vocab_size: int
    eps: float
    rope_theta: float | None  # None: learned positions
    context: int  # the longest input the model takes
    norm: str = "rmsnorm"  # see NORMS
    mlp: str = "gated-silu"  # see MLPS
    parallel_residual: bool = False  # x + attn(ln1 x) + mlp(ln2 x) instead of one after the other
    rotary_dim: int | None = None  # RoPE on the first rotary_dim dims of each head (None: all of them)
    layer_rope_theta: tuple[float, ...] | None = None  # a RoPE base per layer (None: rope_theta everywhere)
    qk_norm: bool = False  # a norm over each head's q and k before RoPE
    post_norms: bool = False  # a norm on the attention's and the MLP's output before the residual add
    norm_offset: float = 0.0  # the norms scale by (offset + weight): Gemma's (1 + w)
    embed_scale: float = 1.0  # token embeddings times this
    attn_scale: float | None = None  # q·k scale (None: 1/sqrt(head_dim))

    @property
    def group(self) -> int:  # query heads per K/V head
        return self.n_heads // self.n_kv_heads

    @property
    def mlp_matrices(self) -> int:  # weight matrices of one MLP
        return 3 if self.mlp.startswith("gated") else 2


@dataclass(frozen=True)
class Family:
    """One family's adapter: which HF model types it reads and how. `check` refuses configs whose forward we do not
    reproduce exactly (one BenchError line)."""

    name: str
    model_types: tuple[str, ...]
    shape: Callable[[object], Shape]  # HF config -> Shape
    check: Callable[[object], None]  # HF config -> None or BenchError
    blocks: Callable[[nn.Module], nn.ModuleList]  # model -> its transformer blocks
    out_proj: Callable[[nn.Module], nn.Module]  # block -> attention output projection (input: z, (B, T, nh*hd))
    mlp: Callable[[nn.Module], nn.Module]  # block -> its MLP module (output: the MLP's residual contribution)
    attn_weights: Callable[[nn.Module, Shape], Weights]
    mlp_weights: Callable[[nn.Module, Shape], Weights]
    norms: Callable[[nn.Module], tuple[nn.Module, nn.Module]]  # block -> (before attention, before MLP)
    embeddings: Callable[[nn.Module], dict]  # model -> wte, wpe (or None), ln_f, lm_head
    post_norms: Callable[[nn.Module], tuple[nn.Module, nn.Module]] | None = None  # block -> (after attn, after MLP)
    qk_norms: Callable[[nn.Module], tuple[nn.Module, nn.Module]] | None = None  # block -> (q norm, k norm)


def rope_parameters(c) -> dict:
    """A HF config's RoPE parameters (rope_parameters; rope_scaling in older transformers); {} if it has none."""
    return getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}


def require_default_rope(*params: dict | None) -> None:
    """Refuse, in one line, RoPE parameters of any type but HF's default (no scaling)."""
    for p in params:
        if p and p.get("rope_type", "default") != "default":
            raise BenchError(f"rope type {p['rope_type']!r} is not supported; only default RoPE is")


def bias(linear: nn.Module) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach()
