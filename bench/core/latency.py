"""Latency measurement: warm-up, then timed runs under inference_mode; CUDA events on GPU, a monotonic clock on CPU."""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p95_ms: float
    runs: int
    batch: int
    seq_len: int
    device: str
    dtype: str
    torch: str
    warmup_s: float = 0.0  # the untimed warm-up calls, compilation and graph capture included

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU's model name where the OS says it (Linux: /proc/cpuinfo), else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def cpu_threads() -> str:
    """The CPU and the threads torch uses on it, e.g. "AMD EPYC, 2 threads": what CPU wall times ran on."""
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_threads()})"


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    """One call's wall time in ms."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


@torch.inference_mode()
def measure(model: torch.nn.Module, ids: torch.Tensor, runs: int = 20, warmup: int = 3,
            call: Callable | None = None) -> Latency:
    """Latency of `model(ids, last_only=True)`, or of `call(model, ids)`: median and p95 over `runs` timed calls
    after `warmup`."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    p = next(model.parameters())
    ids = ids.to(p.device)
    fn = (lambda: model(ids, last_only=True)) if call is None else (lambda: call(model, ids))  # noqa: E731
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    if p.device.type == "cuda":
        torch.cuda.synchronize(p.device)
    warm = time.perf_counter() - start
    times = sorted(_time_once(fn, p.device) for _ in range(runs))
    p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
    return Latency(statistics.median(times), p95, runs, ids.shape[0], ids.shape[1],
                   device_name(p.device), str(p.dtype).removeprefix("torch."), torch.__version__, warm)
