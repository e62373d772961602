"""Gemma 3 (text): RMSNorm scaling by (1 + w), q/k norms, norms before and after both attention and MLP, a gated
GELU (tanh) MLP, embeddings scaled by √d, query_pre_attn_scalar, and sliding and global layers with their own
RoPE bases. Inputs are capped at the sliding window, within which every layer attends causally to all."""
from __future__ import annotations

from models.families import llama
from models.family import Family, Shape, require_default_rope
from models.types import BenchError


def shape(c) -> Shape:
    thetas = tuple(float(c.rope_parameters[t]["rope_theta"]) for t in c.layer_types)
    window = c.sliding_window if "sliding_attention" in c.layer_types else None
    context = min(c.max_position_embeddings, window or c.max_position_embeddings)
    return Shape("gemma3", c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                 c.hidden_size, c.intermediate_size, c.vocab_size, c.rms_norm_eps, thetas[0], context,
                 norm="rmsnorm", mlp="gated-gelu-tanh", layer_rope_theta=thetas, qk_norm=True, post_norms=True,
                 norm_offset=1.0, embed_scale=c.hidden_size ** 0.5, attn_scale=c.query_pre_attn_scalar ** -0.5)


def check(c) -> None:
    if c.final_logit_softcapping is not None or c.attn_logit_softcapping is not None:
        raise BenchError("Gemma 3 with logit softcapping is not supported")
    require_default_rope(*c.rope_parameters.values())  # one set per layer type
    if c.hidden_activation != "gelu_pytorch_tanh":
        raise BenchError(f"Gemma 3 activation {c.hidden_activation!r} is not supported; only gelu_pytorch_tanh is")
    if getattr(c, "use_bidirectional_attention", False):
        raise BenchError("Gemma 3 with bidirectional attention is not supported; only causal is")


FAMILY = Family(
    name="gemma3", model_types=("gemma3_text",), shape=shape, check=check, blocks=lambda m: m.model.layers,
    out_proj=lambda b: b.self_attn.o_proj, mlp=lambda b: b.mlp, attn_weights=llama.attn_weights,
    mlp_weights=llama.mlp_weights, norms=lambda b: (b.input_layernorm, b.pre_feedforward_layernorm),
    embeddings=llama.embeddings, post_norms=lambda b: (b.post_attention_layernorm, b.post_feedforward_layernorm),
    qk_norms=lambda b: (b.self_attn.q_norm, b.self_attn.k_norm))
