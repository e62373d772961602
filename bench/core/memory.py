"""What a search holds in memory, estimated before it starts, so that a size that cannot fit is refused in one line
instead of being killed by the kernel half-way."""
from __future__ import annotations

import os

import torch

from models.arch import Shape
from models.types import BenchError

GB = 1024 ** 3


def available_bytes(device: torch.device) -> int:
    """Memory free for new tensors: the CUDA allocator's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def batch_bytes(s: Shape, t: int, batch: int, itemsize: int) -> int:
    """A generous bound on one batch's working memory: a forward's activations (residual stream and its copies,
    the MLP's hidden layer, the attention scores) and the float64 KL of the last-position logits."""
    forward = t * (6 * s.d_model + 3 * s.d_mlp + 2 * s.n_heads * t) * itemsize
    return batch * (forward + 6 * s.vocab_size * 8)


def cache_bytes_per_prompt(s: Shape, t: int, itemsize: int) -> int:
    """The fast engine's cache for one validation prompt: the residual stream entering every layer, one layer's
    per-head outputs and the full model's last-position logits (the reference engine keeps the logits only)."""
    return (s.n_layers + s.n_heads) * t * s.d_model * itemsize + s.vocab_size * itemsize


def require(need: int, device: torch.device, what: str, detail: str, fix: str) -> None:
    """Refuse, in one line, work that needs more than the free memory:
    '<what> needs about X GB on <device> (<detail>), but Y GB is free; <fix>'."""
    free = available_bytes(device)
    if need > free:
        raise BenchError(f"{what} needs about {need / GB:.1f} GB on {device} ({detail}), but {free / GB:.1f} GB is "
                         f"free; {fix}")


def check_fits(s: Shape, t: int, n_val: int, batch: int, cache_gb: float, device: torch.device,
               itemsize: int, speculate: int = 1) -> None:
    """Refuse a search whose --batch-size working set (times --speculate: the states of a step run as one batch)
    plus the filled cache exceeds the free memory."""
    cache = min(cache_gb * GB, n_val * cache_bytes_per_prompt(s, t, itemsize))
    rows = min(batch, n_val) * min(speculate, s.n_heads + 1)
    what = f"--batch-size {batch}" + (f" × --speculate {speculate}" if speculate > 1 else "")
    require(batch_bytes(s, t, rows, itemsize) + cache, device, what,
            f"one batch, plus up to {cache / GB:.1f} GB of --cache-gb",
            "lower --batch-size" + (", --speculate" if speculate > 1 else "") + " or --cache-gb")
