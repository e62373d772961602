"""Greater-than (Hanna et al. 2023): "The war lasted from the year 1732 to 17" -> any two-digit YY > 32.

Years are XXYY with XX in 11..17 and YY in 02..98. How many tokens the answer takes depends on the tokenizer:
one if it encodes "32" as one token (GPT-2), two if it splits digits (SmolLM2); `correct` decodes that many
generated tokens, strips spaces, and accepts exactly two digits forming a number greater than YY.
The task is a distribution of phrasings of the event and of "from ... to ..."; two are held out."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from tasks.base import Example, Space, Task, Template, Tokenizer, encode, first_single, fit_pool, unrank, unsupported

NAME = "greater-than"
TEMPLATES = (
    Template("lasted-from-the-year", "The {noun} lasted from the year {xx}{yy} to {xx}"),
    Template("began-ended", "The {noun} began in {xx}{yy} and ended in {xx}"),
    Template("started-lasted-until", "The {noun} started in {xx}{yy} and lasted until {xx}"),
    Template("ran-from-the-year", "The {noun} ran from the year {xx}{yy} to {xx}"),
    Template("went-from-the-year", "The {noun} went from the year {xx}{yy} to {xx}"),
    Template("was-from-the-year", "The {noun} was from the year {xx}{yy} to {xx}", heldout=True),
    Template("opened-closed", "The {noun} opened in {xx}{yy} and closed in {xx}", heldout=True),
    Template("until-the-year", "The {noun} lasted from {xx}{yy} until the year {xx}", heldout=True),
)
# Phrasings of other token lengths, in none of the templates (see `bench.tools.offtemplate`).
OFF_TEMPLATE = (
    Template("ran-from", "The {noun} ran from {xx}{yy} to {xx}"),
    Template("took-place-between", "The {noun} took place between {xx}{yy} and {xx}"),
    Template("began-in-the-year", "The {noun} began in the year {xx}{yy} and ended in {xx}"),
    Template("started-ended-the-year", "The {noun} started in the year {xx}{yy} and ended in the year {xx}"),
)
CENTURIES = range(11, 18)
YYS = range(2, 99)
TWO_DIGITS = re.compile(r"[0-9]{2}")

NOUNS = (
    "war", "expedition", "reign", "rebellion", "revolution", "siege", "occupation", "dynasty", "empire",
    "conflict", "journey", "voyage", "campaign", "marriage", "partnership", "presidency", "project", "trial",
    "strike", "drought", "famine", "epidemic", "plague", "crisis", "festival", "tour", "feud", "alliance",
    "friendship", "study", "investigation", "experiment", "construction", "era", "period", "struggle",
    "invasion", "reform", "truce", "treaty", "scandal", "exile", "storm", "dispute", "operation",
    "relationship", "competition", "deal", "contract", "pilgrimage",
)


@dataclass(frozen=True)
class Pools:
    nouns: tuple[str, ...]
    years: tuple[tuple[int, int], ...]  # (XX, YY)

    @property
    def total(self) -> int:
        return len(self.nouns) * len(self.years)


def n_new(tok: Tokenizer) -> int:
    """1 if a two-digit number is one token, 2 if digits are split; anything else is unsupported."""
    n = len(encode(tok, "32"))
    if n not in (1, 2):
        raise unsupported(tok, NAME, f"it encodes '32' as {n} tokens (need 1 or 2)")
    return n


def splits_cleanly(tok: Tokenizer, xx: int, yy: int, n: int) -> bool:
    """True if " XXYY" tokenizes as " XX" followed by the n tokens of "YY" (so the prompt's " XX" ends where
    the answer starts)."""
    tail = encode(tok, f"{yy:02d}")
    return len(tail) == n and encode(tok, f" {xx}{yy:02d}") == encode(tok, f" {xx}") + tail


def pools(tok: Tokenizer, template: str) -> Pools:
    """The nouns and years that keep every prompt of `template` one length for `tok`."""
    n = n_new(tok)
    years = [(xx, yy) for xx in CENTURIES for yy in YYS if splits_cleanly(tok, xx, yy, n)]
    noun = first_single(tok, NOUNS)
    if not years:
        raise unsupported(tok, NAME, "no year XXYY tokenizes as ' XX' followed by 'YY'")
    if noun is None:
        raise unsupported(tok, NAME, "no noun in the pool is a single token")
    ref = {"noun": noun, "xx": f"{years[0][0]}", "yy": f"{years[0][1]:02d}"}
    length = len(encode(tok, template.format(**ref)))
    years = tuple(y for y in years
                  if len(encode(tok, template.format(noun=noun, xx=y[0], yy=f"{y[1]:02d}"))) == length)
    return Pools(fit_pool(tok, template, ref, "noun", NOUNS), years)


def space(tok: Tokenizer, template: Template) -> Space:
    p = pools(tok, template.text)

    def render(i: int) -> Example:
        noun, year = unrank(i, (len(p.nouns), len(p.years)))
        xx, yy = p.years[year]
        prompt = template.text.format(noun=p.nouns[noun], xx=xx, yy=f"{yy:02d}")
        return Example(prompt, f"> {xx}{yy:02d}", tuple(encode(tok, prompt)), yy)

    return Space(template, p.total, len(render(0).input_ids), render)


def later(text: str, yy: int) -> bool:
    text = text.strip()
    return TWO_DIGITS.fullmatch(text) is not None and int(text) > yy


def correct(tok: Tokenizer, targets: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    k = n_new(tok)
    texts = [tok.decode(row[:k].tolist()) for row in generated]
    return torch.tensor([later(t, int(yy)) for t, yy in zip(texts, targets.tolist())], dtype=torch.bool)


def answer_ids(tok: Tokenizer) -> torch.Tensor:
    """The answer tokens the probability difference weighs: "00".."99" as one token each (n_new 1), or the
    digits "0".."9" (n_new 2)."""
    texts = [f"{y:02d}" for y in range(100)] if n_new(tok) == 1 else [str(d) for d in range(10)]
    ids = [encode(tok, s) for s in texts]
    if any(len(i) != 1 for i in ids):
        raise unsupported(tok, NAME, "its answers are not one token each")
    return torch.tensor([i[0] for i in ids])


@torch.inference_mode()
def prob_diff(tok: Tokenizer, fn, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Hanna et al. (2023)'s probability difference per prompt (N,): the probability of a two-digit answer after YY
    minus that of one up to YY. With split digits P("ab") = P(a) P(b | a), the second digit read after YY's tens
    (the only first digit whose second digit decides). A constant answer scores about 0 on it, whatever its
    accuracy. `fn` maps ids (N, T) to last-position logits (N, V)."""
    answers, yy, ids = answer_ids(tok), targets.cpu(), ids.cpu()  # (A,), (N,), (N, T)
    p1 = fn(ids).float().cpu().softmax(-1)[:, answers]  # (N, A)
    if len(answers) == 100:
        later = torch.arange(100)[None] > yy[:, None]  # (N, 100)
        return (p1 * later).sum(1) - (p1 * ~later).sum(1)
    tens, units, ar = yy // 10, yy % 10, torch.arange(10)
    p2 = fn(torch.cat([ids, answers[tens][:, None]], 1)).float().cpu().softmax(-1)[:, answers]  # (N, 10): given tens
    eq = p1.gather(1, tens[:, None])[:, 0]  # (N,)
    after = (p1 * (ar > tens[:, None])).sum(1) + eq * (p2 * (ar > units[:, None])).sum(1)
    upto = (p1 * (ar < tens[:, None])).sum(1) + eq * (p2 * (ar <= units[:, None])).sum(1)
    return after - upto


TASK = Task(
    name=NAME,
    description="greater-than: 'The war lasted from the year 1732 to 17' -> a two-digit year > 32, "
                "in several phrasings",
    templates=TEMPLATES,
    space=space,
    n_new=n_new,
    correct=correct,
    score=prob_diff,
    score_name="probability difference",
    off_template=OFF_TEMPLATE,
    alpha=0.07,  # at 0.14 the circuits lose half the start years ending in 9 (README, results/gt-alpha-s1-...)
    stratum=lambda e: e.target % 10 == 9,  # the decade carry: about 1 prompt in 10, so every split holds its share
    val_share=0.175,  # 7 of the 40 validation prompts carry: at their share (4) seed 2 lost 5 test points (README)
)
