"""Indirect object identification (IOI, Wang et al. 2023), as a distribution of phrasings in both orders:
"Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to" -> " [A]" (BABA), and the same sentence with
"[A] and [B]" (ABBA). Every phrasing below comes in both orders; three phrasings are held out. The training
phrasings of the search's token length feed the splits; those of other lengths widen the fit (`Task.fit_spaces`)."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.base import (Example, Space, Task, Template, Tokenizer, distinct, encode, first_single,
                        first_token_is_target, fit_pool, one_token, token_id, unrank, unsupported)

NAME = "ioi"
# (name, BABA text, held out); "{b} and {a}" becomes "{a} and {b}" in the ABBA twin.
PHRASINGS = (
    ("went-to", "Then, {b} and {a} went to the {place}. {b} gave a {obj} to", False),
    ("while-working", "While {b} and {a} were working at the {place}, {b} gave a {obj} to", False),
    ("place-first", "The {place} {b} and {a} went to had a {obj}. {b} gave it to", False),
    ("yesterday", "Yesterday {b} and {a} went to the {place}. {b} gave a {obj} to", False),
    ("arrived", "Then, {b} and {a} arrived at the {place}. {b} handed a {obj} to", False),
    ("today", "Today, {b} and {a} were at the {place}. {b} gave a {obj} to", False),
    ("stayed", "So {b} and {a} stayed at the {place}. Then {b} gave a {obj} to", False),
    ("as-soon-as", "As soon as {b} and {a} reached the {place}, {b} gave a {obj} to", False),
    ("before-home", "Before {b} and {a} went home from the {place}, {b} gave a {obj} to", False),
    ("since-both", "Since {b} and {a} were both at the {place}, {b} gave a {obj} to", False),
    ("on-monday", "On Monday {b} and {a} walked to the {place}. {b} gave a {obj} to", False),
    ("found-at", "At the {place}, {b} and {a} found a {obj}. {b} gave it to", True),
    ("drove", "Earlier, {b} and {a} drove to the {place}. {b} gave a {obj} to", True),
    ("commuting", "While {b} and {a} were commuting to the {place}, {b} gave a {obj} to", True),
    # Of other token lengths: only a fit of position-free constants with `--fit-every-length` uses these (the
    # search needs one length).
    ("as-left", "As {b} and {a} left the {place}, {b} gave a {obj} to", False),
    ("because", "Because {b} and {a} were at the {place}, {b} gave a {obj} to", False),
    ("reached", "Once {b} and {a} had reached the {place}, {b} passed a {obj} to", False),
    ("dinner", "Last night {b} and {a} had dinner at the {place}. {b} brought a {obj} for", False),
    ("after-lunch", "After the lunch, {b} and {a} went to the {place}. {b} gave a {obj} to", False),
    ("met-at", "In the end, {b} and {a} met at the {place}, and {b} gave a {obj} to", False),
    ("thinking", "Then, {b} and {a} were thinking about going to the {place}. {b} wanted to give a {obj} to", False),
)
# Phrasings in none of the templates, of other token lengths: `bench.tools.offtemplate` feeds them to pruned models.
OFF_TEMPLATE = (
    ("after", "After {b} and {a} went to the {place}, {b} gave a {obj} to"),
    ("afterwards", "Afterwards, {b} and {a} went to the {place}. {b} gave a {obj} to"),
    ("got-a", "When {b} and {a} got a {obj} at the {place}, {b} decided to give it to"),
    ("decided", "Then, {b} and {a} were working at the {place}. {b} decided to give a {obj} to"),
    ("fun", "Then, {b} and {a} had a lot of fun at the {place}. {b} gave a {obj} to"),
)


def both_orders(name: str, text: str, heldout: bool = False) -> tuple[Template, Template]:
    """The BABA phrasing and its ABBA twin."""
    return (Template(f"{name}/BABA", text, heldout),
            Template(f"{name}/ABBA", text.replace("{b} and {a}", "{a} and {b}", 1), heldout))


TEMPLATES = tuple(t for name, text, heldout in PHRASINGS for t in both_orders(name, text, heldout))

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


def pools(tok: Tokenizer, template: str) -> Pools:
    """The word pools that keep every prompt of `template` one length for `tok`."""
    raw = {"a": NAMES, "b": NAMES, "place": PLACES, "obj": OBJECTS}
    ref = {slot: first_single(tok, words) for slot, words in raw.items()}
    if None in ref.values():
        raise unsupported(tok, NAME, "some word pool has no single-token word")
    as_b = set(fit_pool(tok, template, ref, "b", NAMES))
    names = tuple(w for w in fit_pool(tok, template, ref, "a", NAMES) if w in as_b)
    p = Pools(names, fit_pool(tok, template, ref, "place", PLACES), fit_pool(tok, template, ref, "obj", OBJECTS))
    if len(p.names) < 2 or not p.places or not p.objects:
        raise unsupported(tok, NAME, f"only {len(p.names)} names, {len(p.places)} places and {len(p.objects)} "
                                     "objects are single tokens (need >= 2, 1, 1)")
    return p


def space(tok: Tokenizer, template: Template) -> Space:
    p = pools(tok, template.text)
    k = len(p.names)

    def render(i: int) -> Example:
        *who, place, obj = unrank(i, (k, k - 1, len(p.places), len(p.objects)))
        b, a = (p.names[j] for j in distinct(tuple(who), k))
        prompt = template.text.format(a=a, b=b, place=p.places[place], obj=p.objects[obj])
        return Example(prompt, " " + a, tuple(encode(tok, prompt)), token_id(tok, " " + a))

    return Space(template, p.total, len(render(0).input_ids), render)


TASK = Task(
    name=NAME,
    description="indirect object identification: 'Then, B and A went to the P. B gave a O to' -> ' A', "
                "in both orders and several phrasings",
    templates=TEMPLATES,
    space=space,
    n_new=one_token,
    correct=first_token_is_target,
    off_template=tuple(t for name, text in OFF_TEMPLATE for t in both_orders(name, text)),
)
