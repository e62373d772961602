"""Three-letter acronyms (García-Carrasco et al. 2024): "The Chief Executive Officer (CE" -> "O".

Each acronym letter must be its own token, but BPE tokenizers such as SmolLM2's merge capital letters
("CE" is one token). So `input_ids` are built directly, not by encoding the prompt text:
encode("The Chief Executive Officer (") + [id("C"), id("E")], and the target is id("O"), where id(X) is the
single-token id of the bare capital letter X. The prompt text ("... (CE") is only for humans."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.base import (Example, Task, Tokenizer, distinct, draw, encode, first_single, first_token_is_target,
                        fit_pool, one_token, same_length, token_id, unrank, unsupported)

NAME = "acronyms"
TEMPLATE = "The {w1} {w2} {w3} ("

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
    letters: dict  # capital letter -> its single-token id

    @property
    def total(self) -> int:
        k = len(self.words)
        return k * (k - 1) * (k - 2)


def letter_ids(tok: Tokenizer) -> dict[str, int]:
    """Bare capital letters that are single tokens, with their ids."""
    ids = {c: token_id(tok, c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    return {c: i for c, i in ids.items() if i is not None}


def pools(tok: Tokenizer) -> Pools:
    """The capitalised words that are one token (after a space), keep the template one length, and whose
    first letter is a single token on its own."""
    letters = letter_ids(tok)
    ref_word = first_single(tok, WORDS)
    if ref_word is None:
        raise unsupported(tok, NAME, "no capitalised word in the pool is a single token")
    ref = {"w1": ref_word, "w2": ref_word, "w3": ref_word}
    words = tuple(w for w in fit_pool(tok, TEMPLATE, ref, "w1", WORDS) if w[0] in letters)
    if len(words) < 3:
        raise unsupported(tok, NAME, f"only {len(words)} capitalised words are single tokens with a "
                                     "single-token capital letter (need >= 3)")
    return Pools(words, letters)


def examples(tok: Tokenizer, n: int, seed: int) -> list[Example]:
    p = pools(tok)
    k = len(p.words)
    out = []
    for i in draw(seed, n, p.total, NAME):
        words = [p.words[j] for j in distinct(unrank(i, (k, k - 1, k - 2)), k)]
        first, second, third = (w[0] for w in words)
        head = encode(tok, TEMPLATE.format(w1=words[0], w2=words[1], w3=words[2]))
        ids = head + [p.letters[first], p.letters[second]]
        prompt = "The " + " ".join(words) + " (" + first + second
        out.append(Example(prompt, third, tuple(ids), p.letters[third]))
    return same_length(tok, NAME, out)


TASK = Task(
    name=NAME,
    description="3-letter acronyms: 'The Chief Executive Officer (CE' -> 'O' (letters fed as single-letter ids)",
    examples=examples,
    n_new=one_token,
    correct=first_token_is_target,
)
