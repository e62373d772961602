"""Llama (SmolLM2, and Mistral's layout): RMSNorm, RoPE, GQA, separate Q/K/V, gated SiLU MLP, no biases by default."""
from __future__ import annotations

from torch import nn

from models.family import Family, Shape, Weights, bias, require_default_rope, rope_parameters
from models.types import BenchError


def shape(c, family: str = "llama") -> Shape:
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = rope_parameters(c)
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    # Mistral's sliding window: within it, attention is plainly causal; longer inputs are refused
    context = min(c.max_position_embeddings, getattr(c, "sliding_window", None) or c.max_position_embeddings)
    return Shape(family, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, head_dim,
                 c.hidden_size, c.intermediate_size, c.vocab_size, c.rms_norm_eps, float(theta), context,
                 norm="rmsnorm", mlp="gated-silu")


def check(c) -> None:
    require_default_rope(rope_parameters(c))
    if c.hidden_act != "silu":
        raise BenchError(f"{c.model_type} activation {c.hidden_act!r} is not supported; only silu is")


def attn_weights(block: nn.Module, s: Shape) -> Weights:
    a = block.self_attn
    return dict(Wq=a.q_proj.weight.detach(), Wk=a.k_proj.weight.detach(), Wv=a.v_proj.weight.detach(),
                bq=bias(a.q_proj), bk=bias(a.k_proj), bv=bias(a.v_proj), Wo=a.o_proj.weight.detach(), bo=bias(a.o_proj))


def mlp_weights(block: nn.Module, s: Shape) -> Weights:
    m = block.mlp
    return dict(W_gate=m.gate_proj.weight.detach(), b_gate=bias(m.gate_proj), W_in=m.up_proj.weight.detach(),
                b_in=bias(m.up_proj), W_out=m.down_proj.weight.detach(), b_out=bias(m.down_proj))


def embeddings(model: nn.Module) -> dict:
    return dict(wte=model.model.embed_tokens.weight.detach(), wpe=None, ln_f=model.model.norm,
                lm_head=model.lm_head.weight.detach())


FAMILY = Family(
    name="llama", model_types=("llama", "mistral"), shape=shape, check=check, blocks=lambda m: m.model.layers,
    out_proj=lambda b: b.self_attn.o_proj, mlp=lambda b: b.mlp, attn_weights=attn_weights, mlp_weights=mlp_weights,
    norms=lambda b: (b.input_layernorm, b.post_attention_layernorm), embeddings=embeddings)
