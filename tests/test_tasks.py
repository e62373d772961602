"""Tasks, splits, the data module and the accuracy metric, on the real SmolLM2 tokenizer (no model)."""
import re

import pytest
import torch

from models.types import BenchError
from tasks import TASKS, get_task
from tasks.data import Split, TaskAccuracy, TaskDataModule, load_splits, make_splits

GT = "greater-than"


class FakeGPT2Tokenizer:
    """GPT-2-like in the one way that matters here: a two-digit chunk of a number is one token (" 1732" ->
    " 17", "32"). Words keep their leading space; ids are handed out on first sight."""

    name_or_path = "fake-gpt2"

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        pieces = []
        for word in re.findall(r" ?[0-9]+| ?[A-Za-z]+| ?[^\sA-Za-z0-9]", text):
            space, body = (" ", word[1:]) if word.startswith(" ") else ("", word)
            chunks = re.findall(r"[0-9]{1,2}", body) if body.isdigit() else [body]
            pieces += [space + chunks[0]] + chunks[1:]
        return [self._id(p) for p in pieces]

    def decode(self, ids: list[int]) -> str:
        inverse = {i: p for p, i in self.vocab.items()}
        return "".join(inverse[i] for i in ids)


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_prompts_have_one_length_and_single_token_answers(tok, name):
    task = get_task(name)
    examples = task.examples(tok, 300, 0)
    assert len({len(e.input_ids) for e in examples}) == 1
    assert len({e.prompt for e in examples}) == 300  # distinct
    for e in examples[:50]:
        if name != "acronyms":  # acronyms builds its ids directly (see tasks/acronyms.py)
            assert list(e.input_ids) == ids(tok, e.prompt)
        if name != GT:
            assert ids(tok, e.answer) == [e.target]


def test_ioi_answer_is_the_indirect_object(tok):
    for e in get_task("ioi").examples(tok, 20, 3):
        b, a, b2 = re.fullmatch(r"Then, (\w+) and (\w+) went to the \w+\. (\w+) gave a \w+ to", e.prompt).groups()
        assert a != b and b2 == b and e.answer == " " + a


def test_acronym_ids_end_with_the_two_letter_ids(tok):
    for e in get_task("acronyms").examples(tok, 20, 1):
        words = e.prompt.removeprefix("The ").split(" (")[0].split()
        letters = [w[0] for w in words]
        assert e.prompt.endswith(" (" + letters[0] + letters[1]) and e.answer == letters[2]
        assert list(e.input_ids[-2:]) == [ids(tok, letters[0])[0], ids(tok, letters[1])[0]]
        assert list(e.input_ids[:-2]) == ids(tok, e.prompt[:-2])
        assert e.target == ids(tok, letters[2])[0]


def test_greater_than_years_are_in_range(tok):
    for e in get_task(GT).examples(tok, 100, 0):
        xx, yy = re.fullmatch(r"The \w+ lasted from the year (\d\d)(\d\d) to (\d\d)", e.prompt).group(1, 2)
        assert 11 <= int(xx) <= 17 and 2 <= int(yy) <= 98 and e.target == int(yy)


def test_greater_than_correct_on_split_digits(tok):
    task = get_task(GT)
    assert task.n_new(tok) == 2
    rows = [["3", "9"], ["2", "0"], ["x", "9"], ["3", "2"], [" ", "9"], ["9", "9"]]
    generated = torch.tensor([[ids(tok, c)[0] for c in row] for row in rows])
    got = task.correct(tok, torch.tensor([32, 32, 32, 32, 5, 98]), generated)
    assert got.tolist() == [True, False, False, False, False, True]


def test_greater_than_uses_one_token_when_two_digits_are_one():
    fake, task = FakeGPT2Tokenizer(), get_task(GT)
    assert task.n_new(fake) == 1
    examples = task.examples(fake, 50, 0)
    assert len({len(e.input_ids) for e in examples}) == 1
    generated = torch.tensor([[fake.encode("45")[0]], [fake.encode("07")[0]], [fake.encode("ab")[0]]])
    assert task.correct(fake, torch.tensor([40, 40, 2]), generated).tolist() == [True, False, False]


def test_splits_are_disjoint_deterministic_and_seeded(tok):
    for name in TASKS:
        a = make_splits(get_task(name), tok, 30, 20, 10, seed=0)
        assert [len(a[s]) for s in ("patching", "val", "test")] == [30, 20, 10]
        prompts = [{e.prompt for e in a[s].examples} for s in a]
        assert sum(map(len, prompts)) == len(set.union(*prompts)) == 60
        assert make_splits(get_task(name), tok, 30, 20, 10, seed=0) == a
        assert make_splits(get_task(name), tok, 30, 20, 10, seed=1)["patching"] != a["patching"]


def test_unknown_task_and_bad_sizes_raise(tok):
    with pytest.raises(BenchError, match="choose one of: acronyms, greater-than, ioi"):
        get_task("nope")
    with pytest.raises(BenchError, match="n-val"):
        make_splits(get_task("ioi"), tok, 10, 0, 10, seed=0)
    with pytest.raises(BenchError, match=r"at most \d+ .*lower --n-patching"):
        get_task(GT).examples(tok, 10**7, 0)


def test_a_tokenizer_without_single_token_names_is_refused():
    class Chars(FakeGPT2Tokenizer):
        def encode(self, text, add_special_tokens=False):
            return [self._id(c) for c in text]

    with pytest.raises(BenchError, match="cannot support task ioi"):
        get_task("ioi").examples(Chars(), 5, 0)


def test_jsonl_round_trip_and_corrupt_file(tok, tmp_path):
    split = make_splits(get_task("acronyms"), tok, 5, 3, 2, seed=0)["val"]
    split.to_jsonl(tmp_path / "val.jsonl")
    assert Split.from_jsonl("val", tmp_path / "val.jsonl") == split
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "answer": "y"}\n')
    with pytest.raises(BenchError, match="corrupt"):
        Split.from_jsonl("bad", tmp_path / "bad.jsonl")
    with pytest.raises(BenchError, match="does not exist"):
        Split.from_jsonl("gone", tmp_path / "gone.jsonl")


def test_datamodule_gives_one_full_batch_and_rebuilds_from_saved_splits(tok, tmp_path):
    dm = TaskDataModule("ioi", tok, n_patching=12, n_val=7, n_test=5, seed=2)
    dm.setup()
    loaders = (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    for loader, split, n in zip(loaders, (dm.patching, dm.val, dm.test), (12, 7, 5)):
        batches = list(loader)
        assert len(batches) == 1
        assert batches[0]["input_ids"].shape == (n, 15) and batches[0]["input_ids"].dtype == torch.long
        assert torch.equal(batches[0]["targets"], split.targets)
    dm.save(tmp_path)
    again = TaskDataModule.from_splits("ioi", tok, load_splits(tmp_path))
    assert again.test == dm.test and torch.equal(next(iter(again.train_dataloader()))["input_ids"],
                                                 dm.patching.input_ids)


def test_task_accuracy(tok):
    metric = TaskAccuracy(get_task("ioi"), tok)
    targets = torch.tensor([5, 6, 7, 8])
    metric.update(torch.tensor([[5], [0], [7], [8]]), targets)
    assert metric.compute().item() == pytest.approx(0.75)
    gt = TaskAccuracy(get_task(GT), tok)
    digit = [ids(tok, c)[0] for c in "0123456789"]
    gt.update(torch.tensor([[digit[5], digit[0]], [digit[1], digit[0]]]), torch.tensor([40, 40]))
    assert gt.compute().item() == pytest.approx(0.5)
