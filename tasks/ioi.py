"""Indirect object identification (IOI), BABA template (Wang et al. 2023):
"Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to" -> " [A]"."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.base import (Example, Task, Tokenizer, distinct, draw, encode, first_single, first_token_is_target,
                        fit_pool, one_token, same_length, token_id, unrank, unsupported)

NAME = "ioi"
TEMPLATE = "Then, {b} and {a} went to the {place}. {b} gave a {obj} to"

NAMES = (
    "Mary", "John", "Tom", "James", "Dan", "Sarah", "Paul", "Mark", "Anna", "Emma", "Kate", "Lisa", "David",
    "Michael", "Robert", "William", "Richard", "Joseph", "Thomas", "Charles", "Chris", "Daniel", "Matthew",
    "Andrew", "George", "Kevin", "Brian", "Edward", "Steven", "Jason", "Jeff", "Ryan", "Jacob", "Gary", "Eric",
    "Peter", "Frank", "Scott", "Henry", "Jack", "Alex", "Adam", "Nathan", "Sam", "Ben", "Luke", "Mike", "Laura",
    "Rachel", "Amy", "Helen", "Linda", "Susan", "Karen", "Nancy", "Betty", "Julia", "Grace", "Alice", "Rose",
    "Claire", "Jane", "Jessica", "Emily", "Sophie", "Lucy", "Victoria", "Patrick", "Oliver", "Harry", "Max",
    "Martin",
)
PLACES = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "beach",
    "library", "market", "museum", "church", "airport", "cafe", "hotel", "bank", "gym", "theater", "zoo",
    "farm", "bakery", "mall", "cinema", "river", "lake", "party",
)
OBJECTS = (  # consonant-initial, so "a [OBJECT]" reads right
    "book", "ring", "bone", "kiss", "drink", "basketball", "computer", "necklace", "bottle", "bag", "snack",
    "present", "gift", "letter", "ticket", "cake", "flower", "hat", "watch", "phone", "pen", "ball", "key",
    "card", "toy", "shirt", "box", "cup", "coin", "candle",
)


@dataclass(frozen=True)
class Pools:
    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]

    @property
    def total(self) -> int:
        k = len(self.names)
        return k * (k - 1) * len(self.places) * len(self.objects)


def pools(tok: Tokenizer) -> Pools:
    """The word pools that keep every IOI prompt one length for `tok`."""
    raw = {"a": NAMES, "b": NAMES, "place": PLACES, "obj": OBJECTS}
    ref = {slot: first_single(tok, words) for slot, words in raw.items()}
    if None in ref.values():
        raise unsupported(tok, NAME, "some word pool has no single-token word")
    names = fit_pool(tok, TEMPLATE, ref, "a", NAMES)
    names = tuple(w for w in names if w in fit_pool(tok, TEMPLATE, ref, "b", names))
    p = Pools(names, fit_pool(tok, TEMPLATE, ref, "place", PLACES), fit_pool(tok, TEMPLATE, ref, "obj", OBJECTS))
    if len(p.names) < 2 or not p.places or not p.objects:
        raise unsupported(tok, NAME, f"only {len(p.names)} names, {len(p.places)} places and {len(p.objects)} "
                                     "objects are single tokens (need >= 2, 1, 1)")
    return p


def examples(tok: Tokenizer, n: int, seed: int) -> list[Example]:
    p = pools(tok)
    k = len(p.names)
    out = []
    for i in draw(seed, n, p.total, NAME):
        *who, place, obj = unrank(i, (k, k - 1, len(p.places), len(p.objects)))
        b, a = (p.names[j] for j in distinct(tuple(who), k))
        prompt = TEMPLATE.format(a=a, b=b, place=p.places[place], obj=p.objects[obj])
        out.append(Example(prompt, " " + a, tuple(encode(tok, prompt)), token_id(tok, " " + a)))
    return same_length(tok, NAME, out)


TASK = Task(
    name=NAME,
    description="indirect object identification: 'Then, B and A went to the P. B gave a O to' -> ' A'",
    examples=examples,
    n_new=one_token,
    correct=first_token_is_target,
)
