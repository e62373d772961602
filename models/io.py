"""Save and load a pruned model (safetensors weights plus a JSON manifest: config, circuit, provenance) and the
constants that replace a run's removed components (`Means`, so the hook-ablated model can be rebuilt exactly)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model

from models.ablation import Means
from models.pruned import PrunedConfig, PrunedModel
from models.types import BenchError, read_json

WEIGHTS, MANIFEST, CONSTANTS = "model.safetensors", "manifest.json", "constants.safetensors"


def save_pruned(model: PrunedModel, directory: str | Path, circuit: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / WEIGHTS))
    manifest = {"format": "circuit-bench/pruned-v1", "config": model.cfg.to_dict(), "circuit": circuit}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def load_pruned(directory: str | Path, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[PrunedModel, dict]:
    """The model and its manifest; a missing or corrupt manifest or weight file is one BenchError."""
    directory = Path(directory)
    manifest = read_json(directory / MANIFEST)
    if manifest.get("format") != "circuit-bench/pruned-v1":
        raise BenchError(f"{directory / MANIFEST} is not a circuit-bench pruned-model manifest")
    try:
        model = PrunedModel(PrunedConfig.from_dict(manifest["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{directory / MANIFEST} is corrupt ({type(e).__name__}: {e})") from None
    try:
        missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False)
    except (FileNotFoundError, SafetensorError, RuntimeError) as e:
        raise BenchError(f"cannot read {directory / WEIGHTS} ({str(e).splitlines()[0]})") from None
    if missing or unexpected:
        raise BenchError(f"{directory / WEIGHTS} does not match its manifest (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False), manifest


def save_means(means: Means, path: str | Path) -> None:
    """The constants, fitted or not: z (L, P, nh, hd) and mlp (L, P, d), with the scheme and shortest length."""
    save_file({"z": means.z.detach().contiguous().cpu(), "mlp": means.mlp.detach().contiguous().cpu()}, str(path),
              metadata={"scheme": means.scheme, "min_len": str(means.min_len)})


def load_means(path: str | Path) -> Means:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            return Means(f.get_tensor("z"), f.get_tensor("mlp"), meta["scheme"], int(meta["min_len"]))
    except (OSError, SafetensorError, KeyError, ValueError) as e:
        raise BenchError(f"cannot read the constants in {path} ({type(e).__name__}: {e})") from None
