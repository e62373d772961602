"""Tasks, splits, the data module and the accuracy metric, on the real SmolLM2 tokenizer (no model)."""
import re
from dataclasses import replace

import pytest
import torch

from models.types import BenchError
from tasks import TASKS, get_task
from tasks.base import Example
from tasks.data import SPLITS, Split, TaskAccuracy, TaskDataModule, interleave, load_splits, make_splits

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
    examples = task.examples(tok, 300, 0) + task.examples(tok, 60, 0, heldout=True)
    assert len({len(e.input_ids) for e in examples}) == 1
    assert len({e.prompt for e in examples}) == 360  # distinct
    for e in examples[:50] + examples[-20:]:
        assert list(e.input_ids) == ids(tok, e.prompt)  # every prompt is tokenised naturally
        if name != GT:
            assert ids(tok, e.answer) == [e.target]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_is_a_distribution_with_held_out_templates(tok, name):
    """Several training templates take turns; held-out templates are others, and never in the training draw."""
    task = get_task(name)
    train, held = task.template_names(tok, heldout=False), task.template_names(tok, heldout=True)
    assert len(train) >= (12 if name == "ioi" else 4) and len(held) >= 2 and not set(train) & set(held)
    texts = {t.name: t.text for t in task.templates}
    skeleton = lambda names: {re.sub(r"\{\w+\}", "_", texts[n]) for n in names}  # noqa: E731
    assert not skeleton(s.template.name for s in task.fit_spaces(tok)) & skeleton(held)


def test_ioi_phrasings_of_other_lengths_feed_the_fit_alone(tok):
    task = get_task("ioi")
    search, fit = task.spaces(tok, heldout=False), task.fit_spaces(tok)
    assert fit[:len(search)] == search and {t.name for t in task.templates if not t.heldout} == {
        s.template.name for s in fit}
    other = {s.length for s in fit[len(search):]}
    assert len(other) >= 4 and search[0].length not in other
    assert not {t.text for t in task.off_template} & {s.template.text for s in fit}  # those stay unseen
    splits = make_splits(task, tok, 60, 60, 60, seed=4)
    assert {len(e.input_ids) for s in SPLITS for e in splits[s].examples} == {search[0].length}


def test_ioi_has_both_orders_and_the_answer_is_the_indirect_object(tok):
    names = get_task("ioi").template_names(tok, heldout=False)
    assert {n.split("/")[1] for n in names} == {"ABBA", "BABA"}
    orders = set()
    for e in get_task("ioi").examples(tok, 28, 3):
        first, second = re.search(r"(\w+) and (\w+)", e.prompt).groups()
        subject = re.search(r"(\w+) (?:gave|handed)", e.prompt).group(1)
        assert first != second and subject in (first, second)
        assert e.answer == " " + (second if subject == first else first)
        orders.add("BABA" if subject == first else "ABBA")
    assert orders == {"ABBA", "BABA"}


def test_acronyms_are_dotted_after_worked_examples(tok):
    for e in get_task("acronyms").examples(tok, 20, 1):
        *shots, query = e.prompt.split("\n")
        assert len(shots) == 3 and all(re.fullmatch(r"The [\w ]+ \(([A-Z]\.){3}\)", s) for s in shots)
        words = re.fullmatch(r"The (\w+) (\w+) (\w+) \(([A-Z])\.([A-Z])\.", query).groups()
        assert words[3:] == (words[0][0], words[1][0]) and e.answer == words[2][0]
        assert e.target == ids(tok, e.answer)[0]


def test_acronyms_correct_wants_the_capital_and_no_more_letters(tok):
    task = get_task("acronyms")
    o = ids(tok, "O")[0]
    rows = [ids(tok, t)[:1] for t in ("O", " O", "O.", "OS", "Q")]
    got = task.correct(tok, torch.tensor([o] * len(rows)), torch.tensor(rows))
    decoded = [tok.decode(r) for r in rows]
    expected = [bool(re.match(r"\s*O(?![A-Za-z])", d)) for d in decoded]
    assert got.tolist() == expected and expected[0] and not expected[-1]


def test_greater_than_years_are_in_range(tok):
    for e in get_task(GT).examples(tok, 100, 0) + get_task(GT).examples(tok, 30, 0, heldout=True):
        xx, yy, xx2 = re.fullmatch(r"The \w+ [\w ]+ (\d\d)(\d\d) [\w ]+ (\d\d)", e.prompt).groups()
        assert xx == xx2 and 11 <= int(xx) <= 17 and 2 <= int(yy) <= 98 and e.target == int(yy)


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
        assert [len(a[s]) for s in ("patching", "val", "test", "test-heldout")] == [30, 20, 10, 10]
        prompts = [{e.prompt for e in a[s].examples} for s in a]
        assert sum(map(len, prompts)) == len(set.union(*prompts)) == 70
        assert make_splits(get_task(name), tok, 30, 20, 10, seed=0) == a
        assert make_splits(get_task(name), tok, 30, 20, 10, seed=1)["patching"] != a["patching"]


def test_interleave_gives_every_slice_its_share_of_each_stratum():
    examples = sorted((Example(str(i), "", (i,), i) for i in range(100)), key=lambda e: e.target % 10 == 9)
    assert [e.target % 10 for e in examples[-10:]] == [9] * 10  # the rare stratum: all at the end
    rare = interleave(examples, lambda e: e.target % 10 == 9)
    assert sorted(rare, key=lambda e: e.target) == sorted(examples, key=lambda e: e.target)
    for start, size in ((0, 40), (40, 40), (80, 20), (0, 25)):
        assert abs(sum(e.target % 10 == 9 for e in rare[start:start + size]) - size / 10) <= 1
    assert [e.target for e in rare if e.target % 10 == 9] == list(range(9, 100, 10))  # each keeps its order


def test_greater_than_splits_each_hold_their_share_of_the_decade_carry(tok):
    for seed in range(4):
        splits = make_splits(replace(get_task(GT), val_share=None), tok, 40, 40, 100, seed=seed)
        carry = {s: sum(e.target % 10 == 9 for e in splits[s].examples) for s in ("patching", "val", "test")}
        total = sum(carry.values())
        assert all(abs(carry[s] - total * len(splits[s]) / 180) <= 1 for s in carry), carry


def test_val_share_weighs_the_carry_up_in_val_alone(tok):
    task = get_task(GT)
    for seed in range(3):
        plain = make_splits(replace(task, val_share=None), tok, 40, 40, 100, seed=seed)
        splits = make_splits(task, tok, 40, 40, 100, seed=seed)
        assert sum(e.target % 10 == 9 for e in splits["val"].examples) == round(task.val_share * 40) == 7
        assert len(splits["val"]) == 40 and splits["val"] != plain["val"]
        assert all(splits[s] == plain[s] for s in ("patching", "test", "test-heldout"))
        prompts = [{e.prompt for e in splits[s].examples} for s in splits]
        assert sum(map(len, prompts)) == len(set.union(*prompts)) == 280
        assert make_splits(task, tok, 40, 40, 100, seed=seed) == splits


def test_a_val_share_the_draw_cannot_fill_says_what_to_lower(tok):
    task = replace(get_task(GT), stratum=lambda e: e.target == 99, val_share=0.5)
    with pytest.raises(BenchError, match="lower the task's val_share"):
        make_splits(task, tok, 40, 40, 100, seed=0)


def test_unknown_task_and_bad_sizes_raise(tok):
    with pytest.raises(BenchError, match="choose one of: acronyms, greater-than, ioi"):
        get_task("nope")
    with pytest.raises(BenchError, match="n-val"):
        make_splits(get_task("ioi"), tok, 10, 0, 10, seed=0)
    with pytest.raises(BenchError, match=r"can make only \d+ distinct prompts from template .*lower --n-patching"):
        get_task(GT).examples(tok, 10**7, 0)


def test_a_tokenizer_without_single_token_names_is_refused():
    class Chars(FakeGPT2Tokenizer):
        def encode(self, text, add_special_tokens=False):
            return [self._id(c) for c in text]

    with pytest.raises(BenchError, match="cannot support task ioi"):
        get_task("ioi").examples(Chars(), 5, 0)


def held_out_prompt(task, tok, prompt: str) -> bool:
    """Whether `prompt` fits one of the task's held-out templates (its words in the slots)."""
    def pattern(text: str) -> str:
        return "".join(re.escape(p) if i % 2 == 0 else r"\w+" for i, p in enumerate(re.split(r"\{(\w+)\}", text)))
    return any(re.fullmatch(pattern(t.text), prompt) for t in task.templates if t.heldout)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_held_out_templates_never_reach_patching_val_or_test(tok, name):
    task = get_task(name)
    splits = make_splits(task, tok, 60, 60, 60, seed=4)
    for s in ("patching", "val", "test"):
        assert not any(held_out_prompt(task, tok, e.prompt) for e in splits[s].examples)
    assert all(held_out_prompt(task, tok, e.prompt) for e in splits["test-heldout"].examples)


def test_a_template_registry_without_a_fitting_held_out_template_is_refused(tok):
    import dataclasses
    task = get_task(GT)
    odd = tuple(dataclasses.replace(t, text=t.text.replace("The {noun}", "The long {noun}")) if t.heldout else t
                for t in task.templates)
    with pytest.raises(BenchError, match="no held-out template has the 15-token length"):
        dataclasses.replace(task, templates=odd).examples(tok, 5, 0, heldout=True)


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


class _BosTokenizer:
    """SmolLM2's tokenizer, but putting its BOS before a text by itself, as Gemma's does."""

    def __init__(self, tok):
        self.tok, self.bos_token_id, self.name_or_path = tok, 1, "bos-smollm2"

    def encode(self, text, add_special_tokens=True):
        return [1] * add_special_tokens + list(self.tok.encode(text, add_special_tokens=False))

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.mark.parametrize("name", ["ioi", "greater-than", "acronyms"])
def test_prompts_start_with_the_bos_a_tokenizer_adds_itself(name, smollm2_tokenizer):
    from tasks.base import bos_prefix

    plain = get_task(name).examples(smollm2_tokenizer, 6, seed=0)
    assert bos_prefix(smollm2_tokenizer) == ()  # SmolLM2 adds none: its prompts are unchanged
    bos_tok = _BosTokenizer(smollm2_tokenizer)
    with_bos = get_task(name).examples(bos_tok, 6, seed=0)
    assert [e.input_ids for e in with_bos] == [(1,) + e.input_ids for e in plain]
    assert get_task(name).spaces(bos_tok, heldout=False)[0].length == len(plain[0].input_ids) + 1


# ---- greater-than's probability difference: a score a constant answer cannot win -----------------------------

def _greater_than_split(tok, n: int = 60):
    task = get_task("greater-than")
    return task, Split("test", tuple(task.examples(tok, n, 0)))


def _digit_model(tok, pick):
    """Last-position logits with all mass on the digit `pick(yy, position)` for each prompt: position 0 for the first
    answer digit, 1 once a digit is appended. Rows are told apart by their prompt, so any batch order works."""
    from tasks.greater_than import answer_ids

    digits = answer_ids(tok)
    task, split = _greater_than_split(tok)
    by_prompt = {tuple(e.input_ids): e.target for e in split.examples}
    n_prompt = split.input_ids.shape[1]

    def fn(ids):
        out = torch.full((len(ids), len(tok)), -30.0)
        for i, row in enumerate(ids.tolist()):
            yy = by_prompt[tuple(row[:n_prompt])]
            out[i, digits[pick(yy, len(row) - n_prompt)]] = 30.0
        return out
    return task, split, fn


def test_a_constant_99_wins_accuracy_and_the_difference_but_gains_nothing(smollm2_tokenizer):
    from bench.core.metrics import accuracy, scores

    task, split, fn = _digit_model(smollm2_tokenizer, lambda yy, pos: 9)
    assert accuracy(task, smollm2_tokenizer, fn, split) == 1.0  # every YY is at most 98
    s = scores(task, smollm2_tokenizer, fn, split, batch_size=7)
    assert s["score"] == pytest.approx(1.0, abs=1e-6) and s["score_gain"] == pytest.approx(0.0, abs=1e-6)


def test_the_next_year_gains_and_a_uniform_guess_does_not(smollm2_tokenizer):
    from bench.core.metrics import scores

    task, split, nxt = _digit_model(smollm2_tokenizer, lambda yy, pos: (yy + 1) // 10 if pos == 0 else (yy + 1) % 10)
    s = scores(task, smollm2_tokenizer, nxt, split, batch_size=7)
    assert s["score"] == pytest.approx(1.0, abs=1e-6) and s["score_gain"] > 0.5
    uniform = lambda ids: torch.zeros(len(ids), len(smollm2_tokenizer))  # noqa: E731
    s = scores(task, smollm2_tokenizer, uniform, split, batch_size=7)
    assert abs(s["score"]) < 0.1 and s["score_gain"] == pytest.approx(0.0, abs=1e-6)
    assert scores(get_task("ioi"), smollm2_tokenizer, uniform, split) is None  # a task without a score


def test_every_prompt_names_its_template(smollm2_tokenizer):
    """`Task.template_of` finds the template that made a prompt, IOI's two name orders told apart."""
    for task in TASKS.values():
        for heldout in (False, True):
            for s in task.spaces(smollm2_tokenizer, heldout):
                for i in range(0, s.total, max(1, s.total // 7)):
                    assert task.template_of(s.render(i).prompt) == s.template.name
    assert get_task("ioi").template_of("Nothing like any template.") is None
