"""Three-letter acronyms (García-Carrasco et al. 2024), written with dots so that every letter is its own token
in any tokenizer: three worked examples, then "The Chief Executive Officer (C.E." -> "O".

The original task feeds "(CE" as two single-letter ids, which SmolLM2 never sees in text (its tokenizer merges
capitals), and the model got 45-56% of it right. Dotted acronyms tokenize naturally ("(", "C", ".", "E", ".")
and the 135M model gets them right. A template is one set of three worked examples (the few-shot prefix); the
query line is always "The W1 W2 W3 (L1.L2.".

The metric: the first greedy token, leading spaces stripped, must start with the right capital and have no
letter after it ("O", "O." and " O" count; "OS" does not: that would be another acronym). The target stored
with each example is the id of the bare capital, so a cross-entropy on it is well defined."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from tasks.base import (Example, Space, Task, Template, Tokenizer, distinct, encode, first_single, one_token,
                        token_id, unrank, unsupported)

NAME = "acronyms"
QUERY = "The {w1} {w2} {w3} ({l1}.{l2}."
SHOTS = {  # name -> three worked examples; the words need not be in the pool
    "ceo-un-bbc": ("Chief Executive Officer", "United Nations Organization", "British Broadcasting Corporation"),
    "raf-nsa-wto": ("Royal Air Force", "National Security Agency", "World Trade Organization"),
    "ama-iss-wfp": ("American Medical Association", "International Space Station", "World Food Programme"),
    "cia-esa-faa": ("Central Intelligence Agency", "European Space Agency", "Federal Aviation Administration"),
    "ftc-ecb-nhs": ("Federal Trade Commission", "European Central Bank", "National Health Service"),
    "who-nfl-imf": ("World Health Organization", "National Football League", "International Monetary Fund"),
}
HELDOUT = ("ftc-ecb-nhs", "who-nfl-imf")


def _line(name: str) -> str:
    words = name.split()
    return f"The {name} ({'.'.join(w[0] for w in words)}.)\n"


TEMPLATES = tuple(Template(name, "".join(_line(x) for x in shots) + QUERY, name in HELDOUT)
                  for name, shots in SHOTS.items())

WORDS = (
    "Academy", "Agency", "Alliance", "Analysis", "Application", "Army", "Art", "Association", "Authority",
    "Account", "Bank", "Board", "Body", "Book", "Bureau", "Business", "Band", "Base", "Bridge", "Budget",
    "Center", "Chief", "Church", "City", "Club", "College", "Committee", "Company", "Computer", "Council",
    "Court", "Culture", "Data", "Defense", "Department", "Design", "Development", "Director", "District",
    "Division", "Digital", "Economic", "Education", "Energy", "Engine", "Engineering", "Environment",
    "Executive", "Exchange", "Event", "Family", "Federal", "Field", "Film", "Finance", "Force", "Foundation",
    "Front", "Fund", "Future", "Game", "General", "Global", "Government", "Group", "Guard", "Guide", "Health",
    "Heart", "High", "History", "Home", "Hospital", "House", "Human", "Industry", "Information", "Institute",
    "International", "Internet", "Investment", "Island", "Joint", "Journal", "Justice", "Junior", "Key",
    "Kingdom", "Knowledge", "Labor", "Land", "Language", "Law", "League", "Learning", "Library", "Life",
    "Light", "Local", "Management", "Market", "Media", "Medical", "Military", "Ministry", "Model", "Movement",
    "Museum", "Music", "National", "Natural", "Network", "News", "North", "Nuclear", "Office", "Officer",
    "Online", "Operation", "Order", "Organization", "Park", "Party", "People", "Performance", "Planning",
    "Police", "Power", "Program", "Project", "Public", "Quality", "Quarter", "Queen", "Radio", "Records",
    "Research", "Resource", "Road", "Royal", "Rural", "School", "Science", "Security", "Service", "Social",
    "Society", "South", "Space", "State", "Student", "System", "Team", "Technology", "Television", "Theory",
    "Trade", "Training", "Transport", "Trust", "Union", "United", "University", "Urban", "Video", "Village",
    "Vision", "Voice", "Volunteer", "War", "Water", "West", "Women", "Work", "World", "Youth", "Young", "Zone",
)


@dataclass(frozen=True)
class Pools:
    words: tuple[str, ...]

    @property
    def total(self) -> int:
        k = len(self.words)
        return k * (k - 1) * (k - 2)


def fill(template: str, words: list[str]) -> str:
    return template.format(w1=words[0], w2=words[1], w3=words[2], l1=words[0][0], l2=words[1][0])


def pools(tok: Tokenizer, template: str) -> Pools:
    """The capitalised words that are one token after a space and keep the template's length in every slot."""
    ref = first_single(tok, WORDS)
    if ref is None:
        raise unsupported(tok, NAME, "no capitalised word in the pool is a single token")
    length = len(encode(tok, fill(template, [ref] * 3)))
    words = tuple(w for w in dict.fromkeys(WORDS) if token_id(tok, " " + w) is not None and token_id(tok, w[0])
                  and all(len(encode(tok, fill(template, [w if j == i else ref for j in range(3)]))) == length
                          for i in range(3)))
    if len(words) < 3:
        raise unsupported(tok, NAME, f"only {len(words)} capitalised words are single tokens that keep the "
                                     "prompt one length (need >= 3)")
    return Pools(words)


def space(tok: Tokenizer, template: Template) -> Space:
    p = pools(tok, template.text)
    k = len(p.words)

    def render(i: int) -> Example:
        words = [p.words[j] for j in distinct(unrank(i, (k, k - 1, k - 2)), k)]
        prompt = fill(template.text, words)
        return Example(prompt, words[2][0], tuple(encode(tok, prompt)), token_id(tok, words[2][0]))

    return Space(template, p.total, len(render(0).input_ids), render)


def correct(tok: Tokenizer, targets: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """The first greedy token starts with the target capital (after spaces) and has no letter after it."""
    ok = [re.match(r"\s*" + re.escape(tok.decode([t])) + r"(?![A-Za-z])", tok.decode([g])) is not None
          for t, g in zip(targets.tolist(), generated[:, 0].tolist())]
    return torch.tensor(ok, dtype=torch.bool)


TASK = Task(
    name=NAME,
    description="3-letter acronyms, dotted, after three worked examples: 'The Chief Executive Officer (C.E.' -> 'O'",
    templates=TEMPLATES,
    space=space,
    n_new=one_token,
    correct=correct,
)
