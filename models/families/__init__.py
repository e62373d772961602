"""The family adapters, one file each; a new family is a file here and one line in FAMILIES (see README)."""
from __future__ import annotations

from models.families import gemma3, gpt2, gpt_neox, llama, qwen2
from models.family import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (gpt2.FAMILY, llama.FAMILY, qwen2.FAMILY, gpt_neox.FAMILY,
                                                   gemma3.FAMILY)}
MODEL_TYPES: dict[str, Family] = {t: f for f in FAMILIES.values() for t in f.model_types}
