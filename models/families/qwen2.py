"""Qwen2 / Qwen2.5: Llama's layout with biases on Q, K and V (read by Llama's adapter, which takes any biases)."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

from models.families import llama
from models.types import BenchError


def check(c) -> None:
    llama.check(c)
    if getattr(c, "use_sliding_window", False):
        raise BenchError("Qwen2 with use_sliding_window is not supported; only full attention is")


FAMILY = replace(llama.FAMILY, name="qwen2", model_types=("qwen2",), shape=partial(llama.shape, family="qwen2"),
                 check=check)
