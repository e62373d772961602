"""What a task is: a frozen spec with a registry of templates that makes same-length prompts for a tokenizer
and judges greedy answers.

A template is one phrasing of the task. Training templates feed the patching, validation and test splits;
held-out templates feed only `test-heldout`, which the search never sees. Every prompt of a task has one token
length (the per-position mean ablation needs it), so `Task.spaces` keeps the templates whose prompts
have the length most training templates share for this tokenizer; training templates of other lengths feed only
the fit of position-free constants (`Task.fit_spaces`)."""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch

from models.types import BenchError


class Tokenizer(Protocol):  # the slice of a HF tokenizer that tasks use
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class Example:
    """One prompt. `input_ids` is exactly what the model sees: the BOS first when the tokenizer puts one before a
    text by itself (Gemma), none otherwise; nothing is added later."""

    prompt: str  # human-readable prompt text
    answer: str  # human-readable answer, e.g. " Mary", "O", "> 1732"
    input_ids: tuple[int, ...]
    target: int  # what `correct` compares against: a token id (ioi, acronyms) or the start year's YY (greater-than)


@dataclass(frozen=True)
class Template:
    """One phrasing of a task; `text` has the task's slots, e.g. {a}, {b}, {place}, {obj} for IOI."""

    name: str
    text: str
    heldout: bool = False  # True: only in the test-heldout split, never seen by the search


@dataclass(frozen=True)
class Space:
    """Every prompt one template can make for one tokenizer: `render(i)` for i in range(total), all of
    `length` tokens."""

    template: Template
    total: int
    length: int
    render: Callable[[int], Example]


_SPACES: dict[tuple["Task", int], tuple[Tokenizer, list["Space"]]] = {}  # (task, id(tokenizer)) -> (it, spaces)


@dataclass(frozen=True)
class Task:
    """A task: its templates, how one template's prompts are made for a tokenizer (`space`, which raises
    BenchError when the tokenizer cannot support it), and how greedy answers are judged. `n_new` says how
    many greedy tokens `correct` needs; `correct` judges them: (N,), (N, n_new) -> bool (N,). `alpha` is the
    task's default KL threshold for the search. `stratum`, if set, names a kind of prompt (e.g. greater-than's
    decade carry) that the patching, validation and test splits each hold in its share of the draw, so that a
    seed's 40 validation prompts cannot leave it out of the search's KL. `val_share`, if set, gives the prompts
    whose stratum is true that share of the validation split instead, weighing them up in the search's KL. `score`,
    if set, is a per-prompt measure beside accuracy that a constant answer cannot win (greater-than: the
    probability difference), reported as `*_score` wherever accuracy is."""

    name: str
    description: str
    templates: tuple[Template, ...]
    space: Callable[[Tokenizer, Template], Space]
    n_new: Callable[[Tokenizer], int]
    correct: Callable[[Tokenizer, torch.Tensor, torch.Tensor], torch.Tensor]  # (tok, targets, generated) -> bool
    off_template: tuple[Template, ...] = ()  # phrasings in no template, of other lengths (bench.tools.offtemplate)
    alpha: float = 0.14  # `bench extract`'s default KL threshold for this task, chosen by measurement (README)
    stratum: Callable[[Example], object] | None = None  # a rare kind of prompt every split holds its share of
    val_share: float | None = None  # the share of the validation split the stratum's true kind takes (needs stratum)
    score: Callable | None = None  # (tok, fn, ids, targets) -> (N,): a measure a constant answer cannot win
    score_name: str = ""  # what the report calls it

    def spaces(self, tok: Tokenizer, heldout: bool) -> list[Space]:
        """The spaces of the training (or held-out) templates that have the task's one token length."""
        every = self._every_space(tok)
        lengths = [s.length for s in every if not s.template.heldout]
        length = max(lengths, key=lambda n: (lengths.count(n), -lengths.index(n)))  # ties: the first template's
        chosen = [s for s in every if s.template.heldout == heldout and s.length == length]
        if not chosen:
            kind = "held-out" if heldout else "training"
            raise unsupported(tok, self.name, f"no {kind} template has the {length}-token length most training "
                                              "templates share; add one to the task's template registry")
        return chosen

    def fit_spaces(self, tok: Tokenizer) -> list[Space]:
        """Every training template's space, of any token length: the search's first, then the others by length.
        Position-free constants are fitted on these; the search and its splits use `spaces` alone."""
        one = self.spaces(tok, heldout=False)
        rest = [s for s in self._every_space(tok) if not s.template.heldout and s not in one]
        return one + sorted(rest, key=lambda s: s.length)

    def _every_space(self, tok: Tokenizer) -> list[Space]:
        """Every template's space for `tok`, built once per tokenizer: building the word pools is what is slow."""
        key = (self, id(tok))  # the whole frozen task: a variant with other templates gets its own
        cached = _SPACES.get(key)
        if cached is None or cached[0] is not tok:  # an id can be reused once its tokenizer is gone
            _SPACES[key] = cached = (tok, [after_bos(tok, self.space(tok, t)) for t in self.templates])
        return cached[1]

    def examples(self, tok: Tokenizer, n: int, seed: int, heldout: bool = False) -> list[Example]:
        """n distinct examples of the training (or held-out) templates, seeded, the templates taking turns."""
        return draw_examples(self.spaces(tok, heldout), n, seed, self.name, "heldout" if heldout else "train")

    def template_names(self, tok: Tokenizer, heldout: bool) -> list[str]:
        return [s.template.name for s in self.spaces(tok, heldout)]

    def template_of(self, prompt: str) -> str | None:
        """The name of the template (training, held-out or off-template) whose text makes `prompt`: its slots filled
        with one word each, a slot named twice filled alike (IOI's BABA and ABBA orders differ only so); the most
        literal of several; None if none does."""
        found = [t for t in self.templates + self.off_template if _pattern(t.text).fullmatch(prompt)]
        return max(found, key=lambda t: len(SLOT.sub("", t.text))).name if found else None


# ---- helpers shared by the task files -------------------------------------------------------------

SLOT = re.compile(r"\{(\w+)\}")


@functools.lru_cache(maxsize=None)
def _pattern(text: str) -> re.Pattern:
    """A template's text as a regular expression: each slot one word (\\S+), a repeated slot the same word."""
    out, seen, at = [], set(), 0
    for m in SLOT.finditer(text):
        out.append(re.escape(text[at:m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>\\S+?)")
        seen.add(name)
        at = m.end()
    return re.compile("".join(out) + re.escape(text[at:]), re.DOTALL)

def tok_name(tok: Tokenizer) -> str:
    return str(getattr(tok, "name_or_path", "") or type(tok).__name__)


def encode(tok: Tokenizer, text: str) -> list[int]:
    """The ids of `text` exactly as the model will see them (never any BOS/special tokens)."""
    return list(tok.encode(text, add_special_tokens=False))


def bos_prefix(tok: Tokenizer) -> tuple[int, ...]:
    """(BOS,) when the tokenizer puts a BOS before a text by itself (Gemma's <bos>), else (): what the model was
    trained to read first. SmolLM2's and GPT-2's tokenizers add none."""
    bos = getattr(tok, "bos_token_id", None)
    with_special = list(tok.encode("a", add_special_tokens=True))
    return (bos,) if bos is not None and with_special[:1] == [bos] and encode(tok, "a")[:1] != [bos] else ()


def after_bos(tok: Tokenizer, space: "Space") -> "Space":
    """`space` with `bos_prefix(tok)` before every prompt's ids."""
    bos = bos_prefix(tok)
    if not bos:
        return space

    def render(i: int) -> Example:
        e = space.render(i)
        return replace(e, input_ids=bos + e.input_ids)
    return replace(space, length=space.length + len(bos), render=render)


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


def draw_examples(spaces: list[Space], n: int, seed: int, task: str, stream: str = "train") -> list[Example]:
    """n distinct examples, deterministic for `seed` (and `stream`, so that held-out prompts are drawn apart
    from the training ones): example j comes from template j mod k, so every slice mixes the templates evenly."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BenchError(f"need a whole number of examples >= 1, got {n!r}")
    k = len(spaces)
    rng = random.Random(f"{task}/{stream}/{seed}")
    picks = []
    for i, s in enumerate(spaces):
        need = len(range(i, n, k))
        if need > s.total:
            raise BenchError(f"task {task} can make only {s.total} distinct prompts from template "
                             f"{s.template.name!r} with this tokenizer, but {n} prompts over {k} templates need "
                             f"{need}; lower --n-patching/--n-val/--n-test")
        picks.append(iter(rng.sample(range(s.total), need)))
    out = [spaces[j % k].render(next(picks[j % k])) for j in range(n)]
    for j, e in enumerate(out):
        if len(e.input_ids) != spaces[j % k].length:
            raise BenchError(f"task {task}: template {spaces[j % k].template.name!r} made a prompt of "
                             f"{len(e.input_ids)} tokens, not {spaces[j % k].length}: {e.prompt!r}; its word pools "
                             "do not fit this tokenizer")
    return out


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


def one_token(tok: Tokenizer) -> int:
    """`n_new` for tasks whose answer is a single token."""
    return 1


def first_token_is_target(tok: Tokenizer, targets: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """`correct` for tasks whose target is a token id: the first greedy token must be it."""
    return generated[:, 0] == targets.to(generated.device)
