"""Architecture adapters: one frozen spec per HF family, and its weights in one canonical form.

Canonical form (nn.Linear convention, y = x @ W.T + b):
  Wq (nh*hd, d)  Wk, Wv (nkv*hd, d)  Wo (d, nh*hd)   biases may be None.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.types import BenchError


@dataclass(frozen=True)
class Shape:
    """The sizes and constants of a supported model, read off its HF config."""

    arch: str  # "gpt2" | "llama"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    d_mlp: int
    vocab_size: int
    eps: float
    rope_theta: float | None  # None for learned positions (gpt2)
    context: int  # the longest input the model takes

    @property
    def group(self) -> int:  # query heads per K/V head
        return self.n_heads // self.n_kv_heads


def shape_of(model: nn.Module) -> Shape:
    c = model.config
    if c.model_type == "gpt2":
        return Shape("gpt2", c.n_layer, c.n_head, c.n_head, c.n_embd // c.n_head, c.n_embd,
                     c.n_inner or 4 * c.n_embd, c.vocab_size, c.layer_norm_epsilon, None, c.n_positions)
    if c.model_type == "llama":
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        rope = getattr(c, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise BenchError(f"rope type {rope['rope_type']!r} is not supported; only default RoPE is")
        return Shape("llama", c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, head_dim,
                     c.hidden_size, c.intermediate_size, c.vocab_size, c.rms_norm_eps, float(theta),
                     c.max_position_embeddings)
    raise BenchError(f"model type {c.model_type!r} is not supported; supported: gpt2, llama")


def blocks(model: nn.Module) -> nn.ModuleList:
    return model.transformer.h if model.config.model_type == "gpt2" else model.model.layers


def out_proj(block: nn.Module) -> nn.Module:
    """The attention output projection; its input is the per-head z, concatenated: (B, T, nh*hd)."""
    return block.attn.c_proj if hasattr(block, "attn") else block.self_attn.o_proj


def mlp(block: nn.Module) -> nn.Module:
    return block.mlp


def _t(w: torch.Tensor) -> torch.Tensor:  # Conv1D (in, out) -> Linear (out, in)
    return w.detach().t().contiguous()


def attn_weights(block: nn.Module, s: Shape) -> dict[str, torch.Tensor | None]:
    if s.arch == "gpt2":
        a, d = block.attn, s.d_model
        w, b = _t(a.c_attn.weight), a.c_attn.bias.detach()  # (3d, d), (3d,)
        return dict(Wq=w[:d], Wk=w[d:2 * d], Wv=w[2 * d:], bq=b[:d], bk=b[d:2 * d], bv=b[2 * d:],
                    Wo=_t(a.c_proj.weight), bo=a.c_proj.bias.detach())
    a = block.self_attn
    get_b = lambda m: None if m.bias is None else m.bias.detach()  # noqa: E731
    return dict(Wq=a.q_proj.weight.detach(), Wk=a.k_proj.weight.detach(), Wv=a.v_proj.weight.detach(),
                bq=get_b(a.q_proj), bk=get_b(a.k_proj), bv=get_b(a.v_proj),
                Wo=a.o_proj.weight.detach(), bo=get_b(a.o_proj))


def mlp_weights(block: nn.Module, s: Shape) -> dict[str, torch.Tensor | None]:
    m = block.mlp
    if s.arch == "gpt2":
        return dict(W_in=_t(m.c_fc.weight), b_in=m.c_fc.bias.detach(),
                    W_out=_t(m.c_proj.weight), b_out=m.c_proj.bias.detach())
    get_b = lambda l: None if l.bias is None else l.bias.detach()  # noqa: E731
    return dict(W_gate=m.gate_proj.weight.detach(), b_gate=get_b(m.gate_proj),
                W_in=m.up_proj.weight.detach(), b_in=get_b(m.up_proj),
                W_out=m.down_proj.weight.detach(), b_out=get_b(m.down_proj))


def norms(block: nn.Module, s: Shape) -> tuple[nn.Module, nn.Module]:
    if s.arch == "gpt2":
        return block.ln_1, block.ln_2
    return block.input_layernorm, block.post_attention_layernorm


def embeddings(model: nn.Module, s: Shape) -> dict[str, torch.Tensor | None]:
    if s.arch == "gpt2":
        t = model.transformer
        return dict(wte=t.wte.weight.detach(), wpe=t.wpe.weight.detach(), ln_f=t.ln_f,
                    lm_head=model.lm_head.weight.detach())
    return dict(wte=model.model.embed_tokens.weight.detach(), wpe=None, ln_f=model.model.norm,
                lm_head=model.lm_head.weight.detach())


def check_supported(model: nn.Module) -> Shape:
    """Refuse configs whose forward we do not reproduce exactly."""
    s = shape_of(model)
    c = model.config
    if s.arch == "gpt2" and (c.activation_function != "gelu_new" or c.scale_attn_by_inverse_layer_idx
                             or c.reorder_and_upcast_attn or not c.scale_attn_weights):
        raise BenchError("this GPT-2 variant (activation/attention scaling) is not supported")
    if s.arch == "llama" and c.hidden_act != "silu":
        raise BenchError(f"Llama activation {c.hidden_act!r} is not supported; only silu is")
    return s
