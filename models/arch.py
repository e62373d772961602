"""The family adapters seen from the rest of the code: find a model's family and ask it for its parts.

Each family is one file in `models/families/` (see `models/family.py` for what an adapter provides and the
canonical weight form). Nothing outside those files checks a family's name.
"""
from __future__ import annotations

from torch import nn

from models.families import FAMILIES, MODEL_TYPES
from models.family import Family, Shape, Weights
from models.types import BenchError

__all__ = ["Shape", "family_of", "shape_of", "check_supported", "blocks", "out_proj", "mlp", "attn_weights",
           "mlp_weights", "norms", "embeddings", "post_norms", "qk_norms", "supported_types"]


def supported_types() -> list[str]:
    """The HF model types some adapter reads."""
    return sorted(MODEL_TYPES)


def family_of(model: nn.Module) -> Family:
    t = getattr(model.config, "model_type", None)
    if t not in MODEL_TYPES:
        raise BenchError(f"model type {t!r} is not supported; supported: {', '.join(supported_types())}")
    return MODEL_TYPES[t]


def shape_of(model: nn.Module) -> Shape:
    return family_of(model).shape(model.config)


def check_supported(model: nn.Module) -> Shape:
    """The model's Shape; refuses (one BenchError) configs whose forward we do not reproduce exactly."""
    family = family_of(model)
    family.check(model.config)
    return family.shape(model.config)


def blocks(model: nn.Module) -> nn.ModuleList:
    return family_of(model).blocks(model)


def out_proj(model: nn.Module, block: nn.Module) -> nn.Module:
    """The attention output projection of `block`; its input is the per-head z, concatenated: (B, T, nh*hd)."""
    return family_of(model).out_proj(block)


def mlp(model: nn.Module, block: nn.Module) -> nn.Module:
    return family_of(model).mlp(block)


def attn_weights(block: nn.Module, s: Shape) -> Weights:
    return FAMILIES[s.family].attn_weights(block, s)


def mlp_weights(block: nn.Module, s: Shape) -> Weights:
    return FAMILIES[s.family].mlp_weights(block, s)


def norms(block: nn.Module, s: Shape) -> tuple[nn.Module, nn.Module]:
    return FAMILIES[s.family].norms(block)


def embeddings(model: nn.Module, s: Shape) -> dict:
    return FAMILIES[s.family].embeddings(model)


def post_norms(block: nn.Module, s: Shape) -> tuple[nn.Module, nn.Module]:
    """(after attention, after MLP) for a family with post-norms (Shape.post_norms)."""
    return FAMILIES[s.family].post_norms(block)


def qk_norms(block: nn.Module, s: Shape) -> tuple[nn.Module, nn.Module]:
    """(q norm, k norm) for a family with them (Shape.qk_norm)."""
    return FAMILIES[s.family].qk_norms(block)
