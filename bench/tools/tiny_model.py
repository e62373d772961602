"""A tiny random Llama over the embedded model's tokenizer, as a local HF directory: what a dry run extracts,
distils and compares in seconds on a CPU, through the same code paths as the real model."""
from __future__ import annotations

from pathlib import Path

import torch

from models import loading


def tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (4 query heads, 2 K/V heads, width 32) with SmolLM2's tokenizer, saved at `path` (kept if
    it is there already)."""
    if (path / "config.json").is_file():
        return path
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = loading.load_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                      max_position_embeddings=128, initializer_range=0.2)
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path
