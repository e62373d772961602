"""GPT-NeoX / Pythia: LayerNorm, parallel residual, partial rotary, Q/K/V fused per head, exact-GELU MLP, biases."""
from __future__ import annotations

from torch import nn

from models.family import Family, Shape, Weights, bias, require_default_rope, rope_parameters
from models.types import BenchError


def shape(c) -> Shape:
    hd = c.hidden_size // c.num_attention_heads
    rope = rope_parameters(c)
    theta = rope.get("rope_theta", getattr(c, "rotary_emb_base", 10000.0))
    rotary = int(hd * rope.get("partial_rotary_factor", getattr(c, "rotary_pct", 1.0)))
    return Shape("gpt_neox", c.num_hidden_layers, c.num_attention_heads, c.num_attention_heads, hd, c.hidden_size,
                 c.intermediate_size, c.vocab_size, c.layer_norm_eps, float(theta), c.max_position_embeddings,
                 norm="layernorm", mlp="gelu", parallel_residual=c.use_parallel_residual,
                 rotary_dim=None if rotary == hd else rotary)


def check(c) -> None:
    require_default_rope(rope_parameters(c))
    if c.hidden_act != "gelu":
        raise BenchError(f"GPT-NeoX activation {c.hidden_act!r} is not supported; only gelu is")


def attn_weights(block: nn.Module, s: Shape) -> Weights:
    a, nh, hd, d = block.attention, s.n_heads, s.head_dim, s.d_model
    w = a.query_key_value.weight.detach().view(nh, 3, hd, d)  # rows per head: its q, then k, then v
    b = None if a.query_key_value.bias is None else a.query_key_value.bias.detach().view(nh, 3, hd)
    part = lambda i: w[:, i].reshape(nh * hd, d)  # noqa: E731
    part_b = lambda i: None if b is None else b[:, i].reshape(nh * hd)  # noqa: E731
    return dict(Wq=part(0), Wk=part(1), Wv=part(2), bq=part_b(0), bk=part_b(1), bv=part_b(2),
                Wo=a.dense.weight.detach(), bo=bias(a.dense))


def mlp_weights(block: nn.Module, s: Shape) -> Weights:
    m = block.mlp
    return dict(W_in=m.dense_h_to_4h.weight.detach(), b_in=bias(m.dense_h_to_4h), W_out=m.dense_4h_to_h.weight.detach(),
                b_out=bias(m.dense_4h_to_h))


def embeddings(model: nn.Module) -> dict:
    g = model.gpt_neox
    return dict(wte=g.embed_in.weight.detach(), wpe=None, ln_f=g.final_layer_norm,
                lm_head=model.get_output_embeddings().weight.detach())


FAMILY = Family(
    name="gpt_neox", model_types=("gpt_neox",), shape=shape, check=check, blocks=lambda m: m.gpt_neox.layers,
    out_proj=lambda b: b.attention.dense, mlp=lambda b: b.mlp, attn_weights=attn_weights, mlp_weights=mlp_weights,
    norms=lambda b: (b.input_layernorm, b.post_attention_layernorm), embeddings=embeddings)
