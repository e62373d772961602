"""Tiny randomly initialised HF models: the GPT-2 and Llama (GQA) code paths, nothing downloaded."""
from pathlib import Path

import torch
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig,
                          GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

VOCAB = 97


def tiny_gpt2(seed: int = 0, n_layer: int = 3, n_head: int = 4) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=8 * n_head, n_layer=n_layer, n_head=n_head, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)
    return _randomise(GPT2LMHeadModel(cfg))


def tiny_llama(seed: int = 0, n_layer: int = 3, n_head: int = 6, n_kv: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=n_layer,
                      num_attention_heads=n_head, num_key_value_heads=n_kv, head_dim=8,
                      max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=True,
                      initializer_range=0.2)
    return _randomise(LlamaForCausalLM(cfg))


def tiny_qwen2(seed: int = 0, n_layer: int = 3, n_head: int = 6, n_kv: int = 2) -> Qwen2ForCausalLM:
    """Llama's layout with Q/K/V biases; untied embeddings, as in the larger Qwen2.5 models."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=n_layer,
                      num_attention_heads=n_head, num_key_value_heads=n_kv, max_position_embeddings=64,
                      rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.2, use_sliding_window=False)
    return _randomise(Qwen2ForCausalLM(cfg))


def tiny_mistral(seed: int = 0, n_layer: int = 3, n_head: int = 6, n_kv: int = 2) -> MistralForCausalLM:
    """Llama's layout with a sliding window, here longer than any test input."""
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=n_layer,
                        num_attention_heads=n_head, num_key_value_heads=n_kv, head_dim=8, max_position_embeddings=64,
                        sliding_window=32, rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.2)
    return _randomise(MistralForCausalLM(cfg))


def tiny_neox(seed: int = 0, n_layer: int = 3, n_head: int = 4, parallel: bool = True) -> GPTNeoXForCausalLM:
    """Pythia's layout: parallel residual, RoPE on a quarter of each head (4 of 16 dims), fused per-head QKV."""
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=16 * n_head, intermediate_size=64, num_hidden_layers=n_layer,
                        num_attention_heads=n_head, max_position_embeddings=64, use_parallel_residual=parallel,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
                        tie_word_embeddings=False, initializer_range=0.2, hidden_dropout=0.0, attention_dropout=0.0)
    return _randomise(GPTNeoXForCausalLM(cfg))


def tiny_gemma3(seed: int = 0, n_layer: int = 3, n_head: int = 4, n_kv: int = 2) -> Gemma3ForCausalLM:
    """Gemma 3's block: (1 + w) RMSNorms before and after attention and MLP, q/k norms, gated GELU, √d embedding
    scale, query_pre_attn_scalar; two sliding layers (RoPE base 10^4) and a global one (10^6); window 32."""
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layer,
                           num_attention_heads=n_head, num_key_value_heads=n_kv, head_dim=8, query_pre_attn_scalar=16,
                           max_position_embeddings=64, sliding_window=32,
                           layer_types=["sliding_attention"] * (n_layer - 1) + ["full_attention"],
                           initializer_range=0.2, attn_implementation="eager")
    return _randomise(Gemma3ForCausalLM(cfg))


def _randomise(model):
    """HF inits biases and norm weights to constants; perturb them so every weight matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


def tiny_ids(n: int = 6, t: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, t), generator=g)


def gpt2_for(tok, seed: int = 0, **kw) -> GPT2LMHeadModel:
    """A 2-layer, 2-head GPT-2 over `tok`'s vocabulary (HF's init: biases and norms constant)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=16, n_positions=64, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)
    return GPT2LMHeadModel(cfg)


def save_dir(model, tok, directory: Path) -> Path:
    """`model` and `tok` as a local HF directory, which every verb's --model takes."""
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory
