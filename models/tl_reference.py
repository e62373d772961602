"""TransformerLens reference path of Algorithm 1: the same ablation as models.ablation, via TL hooks.

TransformerLens 4.x has no HookedTransformer; `TransformerBridge` wraps an already loaded HF model
and exposes HookedTransformer-style hook names on it. The two we need (canonical names in brackets):

  blocks.{l}.attn.hook_z     [blocks.{l}.attn.o.hook_in]  (B, T, n_heads, d_head): the input of the
                             attention output projection, one slice per *query* head (GQA included)
  blocks.{l}.hook_mlp_out    [blocks.{l}.mlp.hook_out]    (B, T, d_model): the MLP's whole output

Hooks are added only inside `bridge.hooks(fwd_hooks=...)`, which removes them on exit.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from models import arch
from models.ablation import Means
from models.search import kl_last
from models.types import BenchError, Component, scheme

HOOK_Z = "blocks.{}.attn.hook_z"
HOOK_MLP = "blocks.{}.hook_mlp_out"
_SPECIAL = "<|endoftext|>"

HookList = list[tuple[str, Callable]]


def offline_tokenizer(vocab_size: int, special_id: int = 0) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `vocab_size` ids ("t{i}", special token at `special_id`), built offline.

    The bridge only needs *a* tokenizer (we always feed token ids). Without one, boot calls
    AutoTokenizer.from_pretrained(name) and fails offline. `name_or_path` must be set, since
    TL's get_tokenizer_with_bos pops it; `add_bos_token=True` stops it re-loading from the hub.
    """
    vocab = {(_SPECIAL if i == special_id else f"t{i}"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=_SPECIAL))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=_SPECIAL, eos_token=_SPECIAL,
                                   pad_token=_SPECIAL, unk_token=_SPECIAL, add_bos_token=True,
                                   name_or_path="offline-word-level")


def boot_bridge(hf_model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None) -> TransformerBridge:
    """Wrap a supported HF model in a TransformerBridge (GPT-2, Llama, Mistral, Qwen2, GPT-NeoX), with no hub access.

    - The model is deep-copied: booting rewrites the wrapped model in place (its blocks, attention and
      MLP submodules become bridge components, e.g. a Llama layer gains `.attn`, and attention is forced
      to "eager"), which would break models.arch / models.ablation on the caller's model. The tokenizer
      is copied too.
    - `name` is only a label here: with `hf_model=` given, the config and architecture
      (GPT2LMHeadModel / LlamaForCausalLM) are read off `hf_model.config`, not the hub.
    - No compatibility mode (no LayerNorm folding / weight centring): logits stay the HF model's.
    """
    s = arch.check_supported(hf_model)
    c = hf_model.config
    if tokenizer is None:  # only string inputs would use it; we always pass ids
        special = c.bos_token_id if c.bos_token_id is not None and c.bos_token_id < s.vocab_size else 0
        tokenizer = offline_tokenizer(s.vocab_size, special)
    else:  # boot may set pad/eos/bos on it; a tokenizer without add_bos_token is re-loaded from its
        tokenizer = copy.deepcopy(tokenizer)  # name_or_path (fine offline for a local directory)
    name = getattr(hf_model, "name_or_path", "") or s.family
    bridge = TransformerBridge.boot_transformers(name, hf_model=copy.deepcopy(hf_model), tokenizer=tokenizer)
    if (bridge.cfg.n_layers, bridge.cfg.n_heads, bridge.cfg.d_head) != (s.n_layers, s.n_heads, s.head_dim):
        raise BenchError(f"TransformerBridge read a different shape than {s}")
    return bridge.eval()


def _device(bridge: TransformerBridge) -> torch.device:
    return next(bridge.original_model.parameters()).device


def _dtype(bridge: TransformerBridge) -> torch.dtype:
    return next(bridge.original_model.parameters()).dtype


@torch.inference_mode()
def tl_means(bridge: TransformerBridge, ids: torch.Tensor, name: str) -> Means:
    """`collect_means` on the TL path: every hook_z and MLP output averaged over the batch `ids` (N, T), per
    position or over every position too, as the scheme called `name` takes them; zeros for one without constants."""
    sc = scheme(name)
    cfg = bridge.cfg
    n, t = ids.shape
    rows = sc.rows(t)
    kw = dict(dtype=_dtype(bridge), device=_device(bridge))
    z = torch.zeros(cfg.n_layers, rows, cfg.n_heads, cfg.d_head, **kw)  # (L, P, nh, hd)
    out = torch.zeros(cfg.n_layers, rows, cfg.d_model, **kw)  # (L, P, d)
    if not sc.constants:
        return Means(z, out, name)
    dims = sc.dims

    def grab(dst: torch.Tensor, l: int) -> Callable:
        def fn(act: torch.Tensor, hook) -> None:  # act (N, T, nh, hd) or (N, T, d)
            dst[l] = act.float().mean(dims).view(dst.shape[1:]).to(dst.dtype)
        return fn
    hooks = [(HOOK_Z.format(l), grab(z, l)) for l in range(cfg.n_layers)]
    hooks += [(HOOK_MLP.format(l), grab(out, l)) for l in range(cfg.n_layers)]
    with bridge.hooks(fwd_hooks=hooks):
        bridge(ids.to(kw["device"]))
    return Means(z, out, name)


def ablation_hooks(removed: Iterable[Component], means: Means) -> HookList:
    """TL forward hooks that replace each removed head's z slice / MLP output with `means`."""
    heads: dict[int, list[int]] = {}
    mlps: list[int] = []
    for c in removed:
        if c.is_mlp:
            mlps.append(c.layer)
        else:
            heads.setdefault(c.layer, []).append(c.head)

    def patch_z(l: int, hs: list[int]) -> Callable:
        def fn(z: torch.Tensor, hook) -> torch.Tensor:  # z (B, T, nh, hd)
            z = z.clone()
            z[:, :, hs] = means.z_rows(l, 0, z.shape[1])[:, hs].to(z.device, z.dtype)
            return z
        return fn

    def patch_mlp(l: int) -> Callable:
        def fn(out: torch.Tensor, hook) -> torch.Tensor:  # out (B, T, d)
            return means.mlp_rows(l, 0, out.shape[1]).to(out.device, out.dtype).expand_as(out).clone()
        return fn
    hooks = [(HOOK_Z.format(l), patch_z(l, sorted(hs))) for l, hs in sorted(heads.items())]
    return hooks + [(HOOK_MLP.format(l), patch_mlp(l)) for l in sorted(mlps)]


@torch.inference_mode()
def tl_logits(bridge: TransformerBridge, ids: torch.Tensor, removed: Iterable[Component], means: Means,
              last_only: bool = True) -> torch.Tensor:
    """Logits of the TL-ablated model: (N, V) at the last position, or (N, T, V)."""
    with bridge.hooks(fwd_hooks=ablation_hooks(removed, means)):
        logits = bridge(ids.to(_device(bridge)))  # (N, T, V)
    return logits[:, -1] if last_only else logits


class TLScorer:
    """search.HookScorer's contract on the TransformerLens path: one hooked bridge forward per call."""

    def __init__(self, bridge: TransformerBridge, ids: torch.Tensor, means: Means):
        self.bridge, self.ids, self.means = bridge, ids, means
        self.ref = tl_logits(bridge, ids, (), means)  # (N, V) full model
        self.forwards = 0

    def __call__(self, removed: frozenset[Component]) -> float:
        self.forwards += 1
        return kl_last(self.ref, tl_logits(self.bridge, self.ids, removed, self.means))
