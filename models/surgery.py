"""True pruning: copy a HF model's kept weights into a PrunedModel and fold removed parts into constants."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from models import arch
from models.ablation import Means
from models.pruned import Block, PrunedConfig, PrunedModel
from models.types import Component


def pruned_config(model: nn.Module, removed: Iterable[Component], means: Means, meta: dict | None = None):
    s = arch.check_supported(model)
    removed = set(removed)
    heads = [[h for h in range(s.n_heads) if Component(l, h) not in removed] for l in range(s.n_layers)]
    mlps = [Component(l) not in removed for l in range(s.n_layers)]
    w = arch.attn_weights(arch.blocks(model)[0], s)
    m = arch.mlp_weights(arch.blocks(model)[0], s)
    emb = arch.embeddings(model, s)
    return PrunedConfig(
        family=s.family, norm=s.norm, mlp=s.mlp, parallel_residual=s.parallel_residual, rotary_dim=s.rotary_dim,
        layer_rope_theta=None if s.layer_rope_theta is None else list(s.layer_rope_theta), qk_norm=s.qk_norm,
        post_norms=s.post_norms, embed_scale=s.embed_scale, attn_scale=s.attn_scale, d_model=s.d_model,
        d_mlp=s.d_mlp, n_heads=s.n_heads, n_kv_heads=s.n_kv_heads,
        head_dim=s.head_dim, vocab_size=s.vocab_size, eps=s.eps, rope_theta=s.rope_theta,
        n_positions=means.n_positions if means.positional else s.context, heads=heads, mlps=mlps,
        scheme=means.scheme, min_positions=means.min_len if means.positional else 1,
        qkv_bias=w["bq"] is not None, o_bias=w["bo"] is not None, mlp_bias=m["b_in"] is not None,
        n_wpe=0 if emb["wpe"] is None else emb["wpe"].shape[0],
        tied=emb["lm_head"].data_ptr() == emb["wte"].data_ptr(), meta=dict(meta or {}))


def _head_rows(heads: list[int], hd: int) -> torch.Tensor:
    """Row indices of the given heads in a (n*hd, ·) weight."""
    return torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads]) if heads else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def _copy_attention(dst, w: dict, cfg: PrunedConfig, layer: int) -> None:
    q_rows = _head_rows(cfg.heads[layer], cfg.head_dim)
    kv_rows = _head_rows(cfg.kv_heads(layer), cfg.head_dim)
    for name, rows in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
        getattr(dst, name).weight.copy_(w[f"W{name}"][rows])
        if cfg.qkv_bias:
            getattr(dst, name).bias.copy_(w[f"b{name}"][rows])
    dst.o.weight.copy_(w["Wo"][:, q_rows])
    if cfg.o_bias:
        dst.o.bias.copy_(w["bo"])


def _attn_constant(w: dict, cfg: PrunedConfig, means: Means, layer: int) -> torch.Tensor:
    """(P, d): the summed mean output of this layer's removed heads, plus the o bias if no head is left."""
    gone = [h for h in range(cfg.n_heads) if h not in cfg.heads[layer]]
    t, hd = means.n_positions, cfg.head_dim  # P rows: one per position, or one for all
    z = means.z[layer][:, gone].reshape(t, len(gone) * hd).to(w["Wo"])  # (T, n_gone*hd)
    const = z @ w["Wo"][:, _head_rows(gone, hd)].T  # (T, d)
    if w["bo"] is not None and not cfg.heads[layer]:
        const = const + w["bo"]
    return const[: cfg.attn_bias_rows(layer)]  # zero ablation: one row, the o bias


@torch.no_grad()
def _copy_mlp(dst, m: dict, cfg: PrunedConfig) -> None:
    pairs = [("up", "in"), ("down", "out")] + ([("gate", "gate")] if cfg.gated else [])
    for mine, theirs in pairs:
        getattr(dst, mine).weight.copy_(m[f"W_{theirs}"])
        if cfg.mlp_bias:
            getattr(dst, mine).bias.copy_(m[f"b_{theirs}"])


@torch.no_grad()
def prune(model: nn.Module, removed: Iterable[Component], means: Means, meta: dict | None = None) -> PrunedModel:
    """A standalone PrunedModel whose logits equal `model` run under `ablated(model, removed, means)`."""
    cfg = pruned_config(model, removed, means, meta)
    s = arch.shape_of(model)
    ref = next(model.parameters())
    out = PrunedModel(cfg).to(device=ref.device, dtype=ref.dtype)
    copy_ends(out, model)
    for l, (src, dst) in enumerate(zip(arch.blocks(model), out.blocks)):
        fill_block(dst, src, s, cfg, means, l)
    return out.eval().requires_grad_(False)


@torch.no_grad()
def fill_block(dst: Block, src: nn.Module, s: arch.Shape, cfg: PrunedConfig, means: Means, layer: int) -> Block:
    """Copy layer `layer` of a HF model into a pruned Block built from `cfg`. With post-norms, an emptied part's
    constant is stored as the post-norm of its mean: it is what the full model adds."""
    w = arch.attn_weights(src, s)
    ln1, ln2 = arch.norms(src, s)
    post1, post2 = arch.post_norms(src, s) if s.post_norms else (None, None)
    if dst.attn is not None:
        _copy_attention(dst.attn, w, cfg, layer)
        copy_norm(dst.ln1, ln1, s)
        if s.qk_norm:
            for mine, theirs in zip((dst.attn.q_norm, dst.attn.k_norm), arch.qk_norms(src, s)):
                copy_norm(mine, theirs, s)
        if post1 is not None:
            copy_norm(dst.post1, post1, s)
    attn_const, mlp_const = block_constants(src, s, cfg, means, layer)
    if attn_const is not None:
        dst.attn_bias.copy_(attn_const)
    if dst.mlp is not None:
        _copy_mlp(dst.mlp, arch.mlp_weights(src, s), cfg)
        copy_norm(dst.ln2, ln2, s)
        if post2 is not None:
            copy_norm(dst.post2, post2, s)
    elif mlp_const is not None:
        dst.mlp_const.copy_(mlp_const)
    return dst


def block_constants(src: nn.Module, s: arch.Shape, cfg: PrunedConfig, means: Means,
                    layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """What pruned layer `layer` stores for its removed parts, (attn_bias, mlp_const), each (P, d) or None: the
    removed heads' summed output (post-normed if no head is left), the removed MLP's (post-normed). Differentiable
    in `means`, so the constants can be fitted through the pruned model (`refill_constants`)."""
    post1, post2 = arch.post_norms(src, s) if s.post_norms else (None, None)
    attn = mlp = None
    if cfg.attn_bias_rows(layer):
        const = _attn_constant(arch.attn_weights(src, s), cfg, means, layer)
        attn = const if cfg.heads[layer] or post1 is None else post1(const)
    if not cfg.mlps[layer] and cfg.mlp_const_rows(layer):
        mlp = means.mlp[layer] if post2 is None else post2(means.mlp[layer])
    return attn, mlp


def refill_constants(dst: PrunedModel, model: nn.Module, means: Means) -> PrunedModel:
    """`dst` (pruned from `model`) with its constants recomputed from `means`, keeping their autograd graph: a
    forward of `dst` then equals `model` ablated with `means`, and its gradient reaches `means`."""
    s = arch.shape_of(model)
    for l, (src, block) in enumerate(zip(arch.blocks(model), dst.blocks)):
        attn, mlp = block_constants(src, s, dst.cfg, means, l)
        if attn is not None:
            block.attn_bias = attn.to(block.attn_bias.dtype)
        if mlp is not None:
            block.mlp_const = mlp.to(block.mlp_const.dtype)
    return dst


@torch.no_grad()
def copy_norm(dst: nn.Module, src: nn.Module, s: arch.Shape) -> None:
    """A HF norm into ours; a norm that scales by (offset + w) becomes ours with weight offset + w."""
    state = src.state_dict()
    if s.norm_offset:
        state = {**state, "weight": state["weight"] + s.norm_offset}
    dst.load_state_dict(state)


@torch.no_grad()
def copy_ends(dst: PrunedModel, model: nn.Module) -> PrunedModel:
    """Copy the token (and learned position) embeddings, the unembedding and the final norm of `model`."""
    emb = arch.embeddings(model, arch.shape_of(model))
    dst.wte.weight.copy_(emb["wte"])
    if dst.wpe is not None:
        dst.wpe.weight.copy_(emb["wpe"])
    if not dst.cfg.tied:
        dst.lm_head.weight.copy_(emb["lm_head"])
    copy_norm(dst.ln_f, emb["ln_f"], arch.shape_of(model))
    return dst
