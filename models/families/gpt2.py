"""GPT-2: LayerNorm, learned positions, fused Conv1D QKV, GELU (tanh) MLP, biases everywhere."""
from __future__ import annotations

import torch
from torch import nn

from models.family import Family, Shape, Weights
from models.types import BenchError


def shape(c) -> Shape:
    return Shape("gpt2", c.n_layer, c.n_head, c.n_head, c.n_embd // c.n_head, c.n_embd, c.n_inner or 4 * c.n_embd,
                 c.vocab_size, c.layer_norm_epsilon, None, c.n_positions, norm="layernorm", mlp="gelu-tanh")


def check(c) -> None:
    if (c.activation_function != "gelu_new" or c.scale_attn_by_inverse_layer_idx or c.reorder_and_upcast_attn
            or not c.scale_attn_weights):
        raise BenchError("this GPT-2 variant (activation/attention scaling) is not supported")


def _t(w: torch.Tensor) -> torch.Tensor:  # Conv1D (in, out) -> Linear (out, in)
    return w.detach().t().contiguous()


def attn_weights(block: nn.Module, s: Shape) -> Weights:
    a, d = block.attn, s.d_model
    w, b = _t(a.c_attn.weight), a.c_attn.bias.detach()  # (3d, d), (3d,)
    return dict(Wq=w[:d], Wk=w[d:2 * d], Wv=w[2 * d:], bq=b[:d], bk=b[d:2 * d], bv=b[2 * d:],
                Wo=_t(a.c_proj.weight), bo=a.c_proj.bias.detach())


def mlp_weights(block: nn.Module, s: Shape) -> Weights:
    m = block.mlp
    return dict(W_in=_t(m.c_fc.weight), b_in=m.c_fc.bias.detach(), W_out=_t(m.c_proj.weight),
                b_out=m.c_proj.bias.detach())


def embeddings(model: nn.Module) -> dict:
    t = model.transformer
    return dict(wte=t.wte.weight.detach(), wpe=t.wpe.weight.detach(), ln_f=t.ln_f,
                lm_head=model.lm_head.weight.detach())


FAMILY = Family(
    name="gpt2", model_types=("gpt2",), shape=shape, check=check, blocks=lambda m: m.transformer.h,
    out_proj=lambda b: b.attn.c_proj, mlp=lambda b: b.mlp, attn_weights=attn_weights, mlp_weights=mlp_weights,
    norms=lambda b: (b.ln_1, b.ln_2), embeddings=embeddings)
