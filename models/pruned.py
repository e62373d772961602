"""A standalone, truly pruned transformer of any supported family, nanoGPT style; its blocks follow independent
flags (norm, MLP kind, position scheme, biases), never a family name.

Removed heads' Q/K/V/O rows are gone; their mean contribution is a bias: one row per position (scheme
"mean", which then takes only inputs of the lengths it was built for) or one row for every position
("mean-pooled", any length). An attention block or MLP with nothing left is a constant and its norm is
skipped. Shapes: B batch, T positions, d model width, nq/nkv kept query/KV heads, hd head size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.types import BenchError, length_error, scheme


LEGACY_ARCH = {"gpt2": dict(family="gpt2", norm="layernorm", mlp="gelu-tanh"),  # manifests before the family flags
               "llama": dict(family="llama", norm="rmsnorm", mlp="gated-silu")}


@dataclass
class PrunedConfig:
    family: str  # the adapter it was pruned from (models/families/); informational, nothing branches on it
    d_model: int
    d_mlp: int
    n_heads: int  # of the full model
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    eps: float
    rope_theta: float | None
    n_positions: int  # longest input it takes (per-position constants: the last position they cover)
    heads: list[list[int]]  # kept query heads per layer (original indices)
    mlps: list[bool]  # MLP kept, per layer
    scheme: str = "mean"  # what removed components were replaced with: a name in models.types.SCHEMES
    min_positions: int = 1  # shortest input it takes (per-position constants: the prompts' length)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    n_wpe: int = 0  # learned position table size (gpt2)
    tied: bool = True  # lm_head shares the token embedding
    meta: dict = field(default_factory=dict)
    norm: str = "rmsnorm"  # models.family.NORMS
    mlp: str = "gated-silu"  # models.family.MLPS
    parallel_residual: bool = False  # x + attn(ln1 x) + mlp(ln2 x)
    rotary_dim: int | None = None  # RoPE on the first rotary_dim dims of a head (None: all)
    layer_rope_theta: list[float] | None = None  # a RoPE base per layer (None: rope_theta for all)
    qk_norm: bool = False  # RMSNorm over each head's q and k before RoPE
    post_norms: bool = False  # a norm on the attention's and the MLP's output before the residual add
    embed_scale: float = 1.0  # token embeddings times this
    attn_scale: float | None = None  # q·k scale (None: 1/sqrt(head_dim))

    @classmethod
    def from_dict(cls, d: dict) -> "PrunedConfig":
        """From `to_dict()`'s output, or a manifest written before the flags (its "arch" names them)."""
        d = dict(d)
        if "arch" in d:
            d.update(LEGACY_ARCH[d.pop("arch")])
        return cls(**d)

    @property
    def gated(self) -> bool:
        return self.mlp.startswith("gated")

    def theta(self, layer: int) -> float | None:
        return self.rope_theta if self.layer_rope_theta is None else self.layer_rope_theta[layer]

    @property
    def n_layers(self) -> int:
        return len(self.heads)

    def kv_heads(self, layer: int) -> list[int]:
        """K/V heads still needed: one goes only when every query head sharing it is gone."""
        group = self.n_heads // self.n_kv_heads
        return sorted({h // group for h in self.heads[layer]})

    @property
    def positional(self) -> bool:
        return scheme(self.scheme).positional

    @property
    def const_rows(self) -> int:
        """Rows of a folded mean: one per position, or one for all of them."""
        return self.n_positions if self.positional else 1

    def check_length(self, t: int) -> None:
        """Refuse what the model cannot answer: per-position constants of other positions, or a longer input than
        the model takes."""
        if self.positional and not self.min_positions <= t <= self.n_positions:
            raise BenchError(length_error(t, self.min_positions, self.n_positions))
        if t > self.n_positions:
            raise BenchError(f"input of {t} tokens; this model takes at most {self.n_positions}")

    def attn_bias_rows(self, layer: int) -> int:
        """Rows of the folded attention constant: the removed heads' means (const_rows), 1 for only the o bias
        of an emptied block (zero ablation), 0 for none."""
        heads = self.heads[layer]
        if scheme(self.scheme).constants and len(heads) < self.n_heads:
            return self.const_rows
        return int(self.o_bias and not heads)

    def mlp_const_rows(self, layer: int) -> int:
        return self.const_rows if scheme(self.scheme).constants and not self.mlps[layer] else 0

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(cfg: PrunedConfig, dim: int | None = None) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(dim or cfg.d_model, eps=cfg.eps)
    return nn.RMSNorm(dim or cfg.d_model, eps=cfg.eps)


def rope_tables(cfg: PrunedConfig, t: int, device, dtype) -> dict[float, tuple[torch.Tensor, torch.Tensor]] | None:
    """The RoPE tables of every base the layers use, for T positions; None for learned positions."""
    if cfg.rope_theta is None:
        return None
    return {theta: rope_cos_sin(cfg, theta, t, device, dtype) for theta in {cfg.theta(l) for l in range(cfg.n_layers)}}


def rope_cos_sin(cfg: PrunedConfig, theta: float, t: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's default RoPE tables, (T, rd) each, rd the rotated dims of a head (all of them, or rotary_dim)."""
    hd = cfg.rotary_dim or cfg.head_dim
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(t, device=device, dtype=torch.float32), inv)  # (T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the first cos.shape[-1] dims of x (B, nh, T, hd); the rest pass through (partial rotary)."""
    rd = cos.shape[-1]
    x, rest = x[..., :rd], x[..., rd:]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x * cos + torch.cat([-x2, x1], dim=-1) * sin, rest], dim=-1)


class Attention(nn.Module):
    """Causal attention over the kept heads only; GQA by gathering each query head's K/V head."""

    def __init__(self, cfg: PrunedConfig, layer: int):
        super().__init__()
        heads, kv = cfg.heads[layer], cfg.kv_heads(layer)
        group = cfg.n_heads // cfg.n_kv_heads
        self.nq, self.nkv, self.hd = len(heads), len(kv), cfg.head_dim
        d = cfg.d_model
        self.q = nn.Linear(d, self.nq * self.hd, bias=cfg.qkv_bias)
        self.k = nn.Linear(d, self.nkv * self.hd, bias=cfg.qkv_bias)
        self.v = nn.Linear(d, self.nkv * self.hd, bias=cfg.qkv_bias)
        self.o = nn.Linear(self.nq * self.hd, d, bias=cfg.o_bias)
        self.kv_list = [kv.index(h // group) for h in heads]  # each kept query head's K/V head, among those kept
        self.register_buffer("kv_index", torch.tensor(self.kv_list, dtype=torch.long), persistent=False)
        self.gather = self.kv_list != list(range(self.nq))
        self.q_norm = _norm(cfg, self.hd) if cfg.qk_norm else None
        self.k_norm = _norm(cfg, self.hd) if cfg.qk_norm else None
        self.theta, self.scale = cfg.theta(layer), cfg.attn_scale

    def forward(self, x: torch.Tensor, rope: dict | None) -> torch.Tensor:
        b, t, _ = x.shape
        y = self.heads_z(x, rope)  # (B, nq, T, hd)
        return self.o(y.transpose(1, 2).reshape(b, t, self.nq * self.hd))

    def heads_z(self, x: torch.Tensor, rope: dict | None) -> torch.Tensor:
        """Each kept head's z (its output before the O projection), (B, nq, T, hd)."""
        q, k, v = self.qkv(x, rope)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)  # (B, nq, T, hd)

    def qkv(self, x: torch.Tensor, rope: dict | None, offset: int = 0) -> tuple[torch.Tensor, ...]:
        """q, k, v of x (B, T, d) at positions offset..offset+T-1, each (B, nq, T, hd) (K/V gathered per query
        head)."""
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.nq, self.hd).transpose(1, 2)  # (B, nq, T, hd)
        k = self.k(x).view(b, t, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = (r[offset: offset + t] for r in rope[self.theta])
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if self.gather:
            k, v = k.index_select(1, self.kv_index), v.index_select(1, self.kv_index)  # (B, nq, T, hd)
        return q, k, v

    def cached(self, x: torch.Tensor, rope: dict | None, past: tuple | None) -> tuple[torch.Tensor, tuple]:
        """Attention of x (B, T, d), the positions after `past`'s (keys, values), (B, nq, P, hd) each, or None:
        x's queries read the past and each other causally. -> (B, T, d) and the keys and values of all P + T."""
        p = 0 if past is None else past[0].shape[2]
        q, k, v = self.qkv(x, rope, offset=p)  # (B, nq, T, hd) each
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nq, P + T, hd)
        t = x.shape[1]
        mask = torch.ones(t, p + t, dtype=torch.bool, device=x.device).tril(p)  # query i reads keys ..p+i
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)  # (B, nq, T, hd)
        return self.o(z.transpose(1, 2).flatten(2)), (k, v)

    def shared(self, xp: torch.Tensor, x: torch.Tensor, rope: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention over a prefix xp (1, P, d) that every one of x's rows (B, S, d) continues: the prefix runs
        once, and x's queries read its keys and values, broadcast. -> the prefix's (1, P, d) and x's (B, S, d)."""
        (b, s, _), p = x.shape, xp.shape[1]
        qp, kp, vp = self.qkv(xp, rope)  # (1, nq, P, hd) each
        q, k, v = self.qkv(x, rope, offset=p)  # (B, nq, S, hd) each
        k, v = (torch.cat([a.expand(b, -1, -1, -1), c], dim=2) for a, c in ((kp, k), (vp, v)))  # (B, nq, P+S, hd)
        mask = torch.ones(s, p + s, dtype=torch.bool, device=x.device).tril(p)  # query i reads keys ..p+i
        zp = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, scale=self.scale)  # (1, nq, P, hd)
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)  # (B, nq, S, hd)
        return tuple(self.o(y.transpose(1, 2).flatten(2)) for y in (zp, z))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu-tanh": _gelu_tanh, "gelu": F.gelu, "gated-silu": F.silu, "gated-gelu-tanh": _gelu_tanh}


class MLP(nn.Module):
    """down(act(up x)), or down(act(gate x) * up x) for the gated kinds (models.family.MLPS)."""

    def __init__(self, cfg: PrunedConfig):
        super().__init__()
        self.act = ACTIVATIONS[cfg.mlp]
        self.gate = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.mlp_bias) if cfg.gated else None
        self.up = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        if self.gate is None:
            return self.down(self.act(self.up(x)))
        return self.down(self.act(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: PrunedConfig, layer: int):
        super().__init__()
        has_attn = bool(cfg.heads[layer])
        self.ln1 = _norm(cfg) if has_attn else None
        self.attn = Attention(cfg, layer) if has_attn else None
        self.ln2 = _norm(cfg) if cfg.mlps[layer] else None
        self.mlp = MLP(cfg) if cfg.mlps[layer] else None
        self.parallel = cfg.parallel_residual
        # post-norms on what attention and the MLP add; an emptied part's constant is stored post-normed
        self.post1 = _norm(cfg) if cfg.post_norms and has_attn else None
        self.post2 = _norm(cfg) if cfg.post_norms and cfg.mlps[layer] else None
        # removed heads' mean output (+ the o bias once no head is left); a removed MLP's mean. (P, d) each:
        # P = T per-position rows, or 1 row for every position.
        const = lambda rows: torch.zeros(rows, cfg.d_model) if rows else None  # noqa: E731
        self.register_buffer("attn_bias", const(cfg.attn_bias_rows(layer)))
        self.register_buffer("mlp_const", const(cfg.mlp_const_rows(layer)))

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return self.mlp_part(self.attn_part(x, rope), source=x if self.parallel else None)

    def cached(self, x: torch.Tensor, rope, past: tuple | None, offset: int) -> tuple[torch.Tensor, tuple | None]:
        """The block on x (B, T, d) at positions offset.., after the cached keys and values `past` (see
        `Attention.cached`); -> (B, T, d) and this block's cache (None without attention)."""
        if self.attn is None:
            return self.mlp_part(self.attn_part(x, rope, offset), offset, x if self.parallel else None), None
        a, kv = self.attn.cached(self.ln1(x), rope, past)
        if self.attn_bias is not None:
            a = a + _rows(self.attn_bias, offset, x.shape[1])
        y = x + (a if self.post1 is None else self.post1(a))
        return self.mlp_part(y, offset, x if self.parallel else None), kv

    def shared(self, xp: torch.Tensor, x: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """The block on a prefix xp (1, P, d) that every row of x (B, S, d) continues (see `Attention.shared`)."""
        p = xp.shape[1]
        if self.attn is None:
            yp, y = self.attn_part(xp, rope), self.attn_part(x, rope, offset=p)
        else:
            ap, a = self.attn.shared(self.ln1(xp), self.ln1(x), rope)
            if self.attn_bias is not None:
                ap, a = ap + _rows(self.attn_bias, 0, p), a + _rows(self.attn_bias, p, x.shape[1])
            yp, y = (h + (c if self.post1 is None else self.post1(c)) for h, c in ((xp, ap), (x, a)))
        return (self.mlp_part(yp, source=xp if self.parallel else None),
                self.mlp_part(y, offset=p, source=x if self.parallel else None))

    def attn_part(self, x: torch.Tensor, rope, offset: int = 0) -> torch.Tensor:
        """x + attention; x may hold positions offset.. only if this block has no attention left."""
        if self.attn is None:
            return x if self.attn_bias is None else x + _rows(self.attn_bias, offset, x.shape[1])
        a = self.attn(self.ln1(x), rope)
        if self.attn_bias is not None:
            a = a + _rows(self.attn_bias, offset, x.shape[1])
        return x + (a if self.post1 is None else self.post1(a))

    def mlp_part(self, x: torch.Tensor, offset: int = 0, source: torch.Tensor | None = None) -> torch.Tensor:
        """x + MLP of `source` (default x; a parallel-residual block's is its input), or its constant; position-wise,
        so x may hold positions offset.. only."""
        if self.mlp is not None:
            m = self.mlp(self.ln2(x if source is None else source))
            x = x + (m if self.post2 is None else self.post2(m))
        elif self.mlp_const is not None:
            x = x + _rows(self.mlp_const, offset, x.shape[1])
        return x


def _rows(const: torch.Tensor, offset: int, t: int) -> torch.Tensor:
    """A folded constant at positions offset..offset+t-1: its one row fits every position."""
    return const if const.shape[0] == 1 else const[offset: offset + t]


class PrunedModel(nn.Module):
    def __init__(self, cfg: PrunedConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_wpe, cfg.d_model) if cfg.n_wpe else None
        self.blocks = nn.ModuleList(Block(cfg, l) for l in range(cfg.n_layers))
        self.ln_f = _norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, T) token ids -> logits (B, T, V), or (B, V) at the last position."""
        t = ids.shape[1]
        self.cfg.check_length(t)
        x, rope = self.embed(ids)
        if not last_only:
            for block in self.blocks:
                x = block(x, rope)
            return self.unembed(x)
        x = x if last_attention(self.blocks) >= 0 else x[:, -1:]
        return self.unembed(run_to_last(self.blocks, x, rope, t)[:, -1])

    def last_logits(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        """(B, T) token ids -> logits at the last k positions (B, k, V), unembedding only those."""
        if k == 1:
            return self(ids, last_only=True)[:, None]
        t = ids.shape[1]
        self.cfg.check_length(t)
        x, rope = self.embed(ids)
        x = x if last_attention(self.blocks) >= 0 else x[:, -k:]
        return self.unembed(run_to_last(self.blocks, x, rope, t, keep=k))

    def shared_last_logits(self, ids: torch.Tensor, k: int, p: int) -> torch.Tensor:
        """`last_logits(ids, k)` for ids (B, T) whose first p positions are the same in every row: the prefix runs
        once, not B times (p < T - k + 1: the answer positions are not in it)."""
        t = ids.shape[1]
        self.cfg.check_length(t)
        x, _ = self.embed(ids[:, p:], offset=p)  # (B, T - p, d)
        xp, _ = self.embed(ids[:1, :p])  # (1, p, d)
        rope = rope_tables(self.cfg, t, x.device, x.dtype)  # for every position, prefix and rows
        last = last_attention(self.blocks)
        for block in self.blocks[:last + 1]:
            xp, x = block.shared(xp, x, rope)
        return self.unembed(run_to_last(self.blocks[last + 1:], x[:, -k:], rope, t))  # no attention: k positions

    def cached(self, ids: torch.Tensor, cache: "KVCache | None" = None) -> tuple[torch.Tensor, "KVCache"]:
        """Logits (B, T, V) of ids (B, T) that continue the positions `cache` holds (None: a fresh start), and the
        cache with them, so each new token costs one position."""
        offset = 0 if cache is None else cache.length
        t = offset + ids.shape[1]
        self.cfg.check_length(t)
        x, _ = self.embed(ids, offset)  # (B, T, d)
        rope = rope_tables(self.cfg, t, x.device, x.dtype)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block.cached(x, rope, None if cache is None else cache.layers[i], offset)
            layers.append(kv)
        return self.unembed(x), KVCache(t, layers)

    def embed(self, ids: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, dict | None]:
        """(B, T) at positions offset.. -> the residual stream (B, T, d) and the RoPE tables for T positions, per
        base (None: learned positions)."""
        t = ids.shape[1]
        x = self.wte(ids)
        if self.cfg.embed_scale != 1.0:
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)
        if self.wpe is not None:
            x = x + self.wpe.weight[offset: offset + t]
        return x, rope_tables(self.cfg, t, x.device, x.dtype)

    def unembed(self, x: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., V)
        return self.lm_head(self.ln_f(x))


@dataclass
class KVCache:
    """What `PrunedModel.cached` keeps between calls: how many positions it holds, and each block's keys and
    values (B, nq, length, hd) (None for a block without attention)."""

    length: int
    layers: list

    def get_seq_length(self, layer_idx: int = 0) -> int:  # what Hugging Face's generate() asks a cache
        return self.length


def last_attention(blocks) -> int:
    """Index of the last of `blocks` that still has attention heads; -1 when none has. A plain loop: torch.compile
    traces it, where `max(..., default=-1)` broke the graph on every forward."""
    last = -1
    for i, b in enumerate(blocks):
        if b.attn is not None:
            last = i
    return last


def run_to_last(blocks, x: torch.Tensor, rope, t: int, keep: int = 1) -> torch.Tensor:
    """`blocks` on x, (B, t, d) or already (B, keep, d) at the last keep of t positions when no block has attention.
    Positions stop mixing after the last attention left, so only the last `keep` are carried from there."""
    last_attn = last_attention(blocks)
    for i, block in enumerate(blocks):
        y = block.attn_part(x, rope, offset=t - x.shape[1])
        source = x if block.parallel else y  # what the MLP reads
        if i == last_attn:
            y, source = y[:, -keep:], source[:, -keep:]
        x = block.mlp_part(y, offset=t - y.shape[1], source=source)
    return x


EMBEDDINGS = ("wte.weight", "wpe.weight", "lm_head.weight")
CONSTANTS = ("attn_bias", "mlp_const")  # the buffers that hold what removed components added


def count_params(model: PrunedModel) -> dict[str, int]:
    """Non-embedding weights, the folded constants, and their sum (what the paper's cut compares)."""
    weights = sum(p.numel() for n, p in model.named_parameters() if n not in EMBEDDINGS)
    consts = sum(b.numel() for n, b in model.named_buffers() if n.endswith(CONSTANTS))
    return {"weights": weights, "constants": consts, "non_embedding": weights + consts}


def count_params_of(cfg: PrunedConfig) -> dict[str, int]:
    """`count_params` from the config alone, without building the model (cheap enough for every step)."""
    d, hd, dm = cfg.d_model, cfg.head_dim, cfg.d_mlp
    per = 2 if cfg.norm == "layernorm" else 1  # weight (+ bias) per dimension
    norm = per * d * (1 + cfg.post_norms)  # a part's norm (and its post-norm)
    weights, consts = per * d, 0  # ln_f
    for layer, heads in enumerate(cfg.heads):
        nq, nkv = len(heads), len(cfg.kv_heads(layer))
        if nq:
            weights += norm + d * hd * (nq + 2 * nkv) + nq * hd * d + 2 * per * hd * cfg.qk_norm
            weights += hd * (nq + 2 * nkv) * cfg.qkv_bias + d * cfg.o_bias
        if cfg.mlps[layer]:
            n_in = 2 if cfg.gated else 1
            weights += norm + (n_in + 1) * d * dm + (n_in * dm + d) * cfg.mlp_bias
        consts += d * (cfg.attn_bias_rows(layer) + cfg.mlp_const_rows(layer))
    return {"weights": weights, "constants": consts, "non_embedding": weights + consts}
