"""What a task is: a frozen spec that makes same-length prompts for a tokenizer and judges greedy answers."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from models.types import BenchError


class Tokenizer(Protocol):  # the slice of a HF tokenizer that tasks use
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class Example:
    """One prompt. `input_ids` is exactly what the model sees (no BOS is added later)."""

    prompt: str  # human-readable prompt text
    answer: str  # human-readable answer, e.g. " Mary", "O", "> 1732"
    input_ids: tuple[int, ...]
    target: int  # what `correct` compares against: a token id (ioi, acronyms) or the start year's YY (greater-than)


@dataclass(frozen=True)
class Task:
    """A task. `examples` draws n distinct examples of one token length, seeded; it raises BenchError
    when the tokenizer cannot support the task or the word pools cannot give n examples.
    `n_new` says how many greedy tokens `correct` needs; `correct` judges them: (N,), (N, n_new) -> bool (N,)."""

    name: str
    description: str
    examples: Callable[[Tokenizer, int, int], list[Example]]  # (tokenizer, n, seed) -> examples
    n_new: Callable[[Tokenizer], int]
    correct: Callable[[Tokenizer, torch.Tensor, torch.Tensor], torch.Tensor]  # (tok, targets, generated) -> bool


# ---- helpers shared by the task files -------------------------------------------------------------

def tok_name(tok: Tokenizer) -> str:
    return str(getattr(tok, "name_or_path", "") or type(tok).__name__)


def encode(tok: Tokenizer, text: str) -> list[int]:
    """The ids of `text` exactly as the model will see them (never any BOS/special tokens)."""
    return list(tok.encode(text, add_special_tokens=False))


def token_id(tok: Tokenizer, text: str) -> int | None:
    """The id of `text` if the tokenizer encodes it as exactly one token, else None."""
    ids = encode(tok, text)
    return ids[0] if len(ids) == 1 else None


def unsupported(tok: Tokenizer, task: str, why: str):
    return BenchError(f"tokenizer {tok_name(tok)} cannot support task {task}: {why}; use another model")


def fit_pool(tok: Tokenizer, template: str, ref: dict[str, str], slot: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """The words (deduplicated, in order) that are one token after a space and keep `template`'s token length
    when put in `slot` (the other slots filled from `ref`)."""
    length = len(encode(tok, template.format(**ref)))
    keep = [w for w in dict.fromkeys(words) if token_id(tok, " " + w) is not None
            and len(encode(tok, template.format(**{**ref, slot: w}))) == length]
    return tuple(keep)


def first_single(tok: Tokenizer, words: tuple[str, ...]) -> str | None:
    """The first word that is one token after a space (a reference filler for fit_pool)."""
    return next((w for w in words if token_id(tok, " " + w) is not None), None)


def draw(seed: int, n: int, total: int, task: str) -> list[int]:
    """n distinct indices into a space of `total` combinations, deterministic for `seed`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BenchError(f"need a whole number of examples >= 1, got {n!r}")
    if n > total:
        raise BenchError(f"task {task} can make at most {total} distinct prompts with this tokenizer, but {n} "
                         "were asked for; lower --n-patching/--n-val/--n-test")
    return random.Random(seed).sample(range(total), n)


def unrank(i: int, radices: tuple[int, ...]) -> tuple[int, ...]:
    """Index i of the product space with these sizes, as one digit per size (first size most significant)."""
    digits = []
    for r in reversed(radices):
        i, d = divmod(i, r)
        digits.append(d)
    return tuple(reversed(digits))


def distinct(digits: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Digits of radices (k, k-1, ...) as that many distinct indices into range(k), in order."""
    rest = list(range(k))
    return tuple(rest.pop(d) for d in digits)


def same_length(tok: Tokenizer, task: str, examples: list[Example]) -> list[Example]:
    """Check the one-token-length promise (the pools are filtered for it, so a failure is a tokenizer quirk)."""
    lengths = {len(e.input_ids) for e in examples}
    if len(lengths) > 1:
        raise unsupported(tok, task, f"its prompts tokenize to different lengths {sorted(lengths)}")
    return examples


def one_token(tok: Tokenizer) -> int:
    """`n_new` for tasks whose answer is a single token."""
    return 1


def first_token_is_target(tok: Tokenizer, targets: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """`correct` for tasks whose target is a token id: the first greedy token must be it."""
    return generated[:, 0] == targets.to(generated.device)
