"""Seeded, disjoint splits of a task, as a Lightning data module and a torchmetrics accuracy.

patching, val and test come from the task's training templates; test-heldout comes from its held-out
templates only, so the search never sees a held-out phrasing."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric

from models.types import BenchError
from tasks import get_task
from tasks.base import Example, Task, Template, Tokenizer, after_bos, draw_examples

SPLITS = ("patching", "val", "test", "test-heldout")
SEARCH_SPLITS = ("patching", "val", "test")  # drawn together from the training templates
TEST_SPLITS = ("test", "test-heldout")
DEFAULT_N = {"patching": 100, "val": 100, "test": 200}
FIELDS = ("prompt", "answer", "input_ids", "target")


@dataclass(frozen=True)
class Split:
    """One split: examples of one token length, or of several (a search on every length). Whatever needs a
    tensor takes the split by `groups()` (one length each) or `batches(n)`."""

    name: str
    examples: tuple[Example, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", tuple(self.examples))
        if not self.examples:
            raise BenchError(f"split {self.name!r} is empty; ask for at least 1 example")

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Its prompts' token lengths, in the order they first appear."""
        return list(dict.fromkeys(len(e.input_ids) for e in self.examples))

    def groups(self) -> list["Split"]:
        """The split by length: one split per length, in `lengths` order, each keeping its examples' order."""
        if len(self.lengths) == 1:
            return [self]
        return [Split(self.name, tuple(e for e in self.examples if len(e.input_ids) == t)) for t in self.lengths]

    @property
    def ordered(self) -> tuple[Example, ...]:
        """Its examples in the order `groups()` and `batches()` take them."""
        return tuple(e for g in self.groups() for e in g.examples)

    def batches(self, batch_size: int | None = None) -> list["Split"]:
        """Batches of at most `batch_size` examples (None: a group at once), each of one length, group by group."""
        return [Split(self.name, g.examples[i:i + (batch_size or len(g))])
                for g in self.groups() for i in range(0, len(g), batch_size or len(g))]

    @property
    def input_ids(self) -> torch.Tensor:
        """(N, T): a split of one length only."""
        if len(self.lengths) > 1:
            raise BenchError(f"split {self.name!r} holds prompts of {len(self.lengths)} lengths; take it by groups")
        return torch.tensor([e.input_ids for e in self.examples], dtype=torch.long)

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([e.target for e in self.examples], dtype=torch.long)

    def to_jsonl(self, path: str | Path) -> None:
        lines = (json.dumps({"prompt": e.prompt, "answer": e.answer, "input_ids": list(e.input_ids),
                             "target": e.target}) for e in self.examples)
        Path(path).write_text("".join(line + "\n" for line in lines))

    @classmethod
    def from_jsonl(cls, name: str, path: str | Path) -> "Split":
        path = Path(path)
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if not rows:
                raise ValueError("no examples")
            return cls(name, tuple(_example(row) for row in rows))
        except FileNotFoundError:
            raise BenchError(f"{path} does not exist; re-create the splits with `bench extract`") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise BenchError(f"{path} is corrupt ({type(e).__name__}: {e}); "
                             "re-create it with `bench extract`") from None


def _example(row: dict) -> Example:
    if not isinstance(row, dict) or set(row) != set(FIELDS):
        raise ValueError(f"expected a JSON object with keys {', '.join(FIELDS)}")
    ids = tuple(_int(i) for i in row["input_ids"])
    if not ids or not isinstance(row["prompt"], str) or not isinstance(row["answer"], str):
        raise ValueError("empty input_ids or non-text prompt/answer")
    return Example(row["prompt"], row["answer"], ids, _int(row["target"]))


def _int(x) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{x!r} is not an integer")
    return x


def make_splits(task: Task, tok: Tokenizer, n_patching: int, n_val: int, n_test: int,
                seed: int, every_length: bool = False) -> dict[str, Split]:
    """One seeded draw of n_patching + n_val + n_test distinct examples of the training templates, sliced into
    disjoint splits (each holding its share of every `task.stratum`, if the task has one), and n_test examples of
    the held-out templates (test-heldout). With `every_length`, the patching and validation splits are drawn again
    from the training templates of every token length (`every_length_splits`); test stays as drawn."""
    sizes = dict(zip(SEARCH_SPLITS, (n_patching, n_val, n_test)))
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BenchError(f"--n-{name} must be a whole number >= 1, got {n!r}")
    examples = task.examples(tok, sum(sizes.values()), seed)
    if task.stratum is not None:
        examples = interleave(examples, task.stratum)
    splits, start = {}, 0
    for name, n in sizes.items():
        splits[name] = Split(name, tuple(examples[start:start + n]))
        start += n
    if every_length:
        splits.update(every_length_splits(task, tok, n_patching, n_val, seed, splits["test"]))
    if task.val_share is not None:
        splits["val"] = weigh_up(task, tok, splits, seed)
    splits["test-heldout"] = Split("test-heldout", tuple(task.examples(tok, n_test, seed, heldout=True)))
    return splits


def phrasing_split(task: Task, tok: Tokenizer, template: Template, n: int, seed: int) -> Split:
    """n prompts of one phrasing (an off-template one, say), as the task's own prompts are made: the BOS first
    where one is due; drawn apart from every other split."""
    space = after_bos(tok, task.space(tok, template))
    return Split(template.name, tuple(draw_examples([space], n, seed, task.name, stream="off-template")))


def off_template_split(task: Task, tok: Tokenizer, n: int, seed: int) -> Split | None:
    """n prompts of each of the task's off-template phrasings (`Task.off_template`), of their own lengths, in one
    split; None for a task without any."""
    if not task.off_template:
        return None
    examples = (e for t in task.off_template for e in phrasing_split(task, tok, t, n, seed).examples)
    return Split("off-template", tuple(examples))


def every_length_splits(task: Task, tok: Tokenizer, n_patching: int, n_val: int, seed: int,
                        test: Split) -> dict[str, Split]:
    """Patching and validation splits from the training templates of every token length (`Task.fit_spaces`), the
    lengths and then the templates of a length taking turns, none of them a test prompt; each holds its share of
    every `task.stratum`."""
    by_length: dict[int, list] = {}
    for s in task.fit_spaces(tok):
        by_length.setdefault(s.length, []).append(s)
    rounds = max(map(len, by_length.values()))  # the lengths take turns, so that a few prompts span them
    spaces = [g[i] for i in range(rounds) for g in by_length.values() if i < len(g)]
    need = n_patching + n_val
    used = {e.prompt for e in test.examples}
    drawn = draw_examples(spaces, need + len(used), seed, task.name, stream="every-length")
    examples = [e for e in drawn if e.prompt not in used][:need]
    if task.stratum is not None:
        examples = interleave(examples, task.stratum)
    return {"patching": Split("patching", tuple(examples[:n_patching])),
            "val": Split("val", tuple(examples[n_patching:]))}


def weigh_up(task: Task, tok: Tokenizer, splits: dict[str, Split], seed: int) -> Split:
    """The validation split with `task.val_share` of it given to prompts whose stratum is true: its last other
    prompts give way to such prompts from a draw of their own, apart from every split."""
    val = splits["val"].examples
    rare = [e for e in val if task.stratum(e)]
    want = min(len(val), round(task.val_share * len(val)))
    if want <= len(rare):
        return splits["val"]
    used = {e.prompt for s in splits.values() for e in s.examples}
    n_draw = 20 * (want - len(rare)) + 100
    drawn = draw_examples(task.spaces(tok, heldout=False), n_draw, seed, task.name, stream="val-weighed-up")
    extra = [e for e in drawn if task.stratum(e) and e.prompt not in used][:want - len(rare)]
    if len(rare) + len(extra) < want:
        raise BenchError(f"task {task.name}: {n_draw} more prompts held only {len(extra)} of the "
                         f"{want - len(rare)} more its val_share of {task.val_share} needs; lower the task's val_share")
    others = [e for e in val if not task.stratum(e)][:len(val) - want]
    return Split("val", tuple(interleave(rare + extra + others, task.stratum)))


def interleave(examples: list[Example], stratum) -> list[Example]:
    """The examples reordered so that every contiguous slice holds each stratum in its share of the whole, to
    within one example: the i-th of a stratum's n examples goes to the place (i + 1/2) / n of the list. Each
    stratum keeps its own order, so the templates still take turns within it."""
    groups: dict[object, list[Example]] = {}
    for e in examples:
        groups.setdefault(stratum(e), []).append(e)
    placed = [((i + 0.5) / len(g), g_index, e) for g_index, g in enumerate(groups.values()) for i, e in enumerate(g)]
    return [e for *_, e in sorted(placed, key=lambda t: t[:2])]


class _Batches(Dataset):
    """A split's `batches`, each {"input_ids": (B, T), "targets": (B,)}: the order every engine takes them in."""

    def __init__(self, split: Split, batch_size: int | None) -> None:
        self.batches = [{"input_ids": b.input_ids, "targets": b.targets} for b in split.batches(batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


class TaskDataModule(L.LightningDataModule):
    """Each dataloader yields its split in order, in batches {"input_ids": (B, T) long, "targets": (B,) long} of
    `batch_size` examples (None: the whole split as one batch), one length each (`Split.batches`)."""

    def __init__(self, task: str | Task, tokenizer: Tokenizer, n_patching: int = DEFAULT_N["patching"],
                 n_val: int = DEFAULT_N["val"], n_test: int = DEFAULT_N["test"], seed: int = 0,
                 batch_size: int | None = None, every_length: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.task = task if isinstance(task, Task) else get_task(task)
        self.tokenizer = tokenizer
        self.sizes = (n_patching, n_val, n_test)
        self.seed, self.batch_size, self.every_length = seed, batch_size, every_length
        self.splits: dict[str, Split] | None = None

    @classmethod
    def from_splits(cls, task: str | Task, tokenizer: Tokenizer, splits: dict[str, Split],
                    batch_size: int | None = None) -> "TaskDataModule":
        """Rebuild the module from saved splits (see `save` / `load_splits`) instead of drawing new ones."""
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise BenchError(f"missing split(s) {', '.join(missing)} (runs made before held-out templates have no "
                             "test-heldout); re-create the splits with `bench extract`")
        module = cls(task, tokenizer, *(len(splits[s]) for s in SEARCH_SPLITS), batch_size=batch_size)
        module.splits = {s: splits[s] for s in SPLITS}
        return module

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = make_splits(self.task, self.tokenizer, *self.sizes, seed=self.seed,
                                      every_length=self.every_length)

    def split(self, name: str) -> Split:
        self.setup()
        return self.splits[name]

    patching = property(lambda self: self.split("patching"))
    val = property(lambda self: self.split("val"))
    test = property(lambda self: self.split("test"))
    heldout = property(lambda self: self.split("test-heldout"))

    def _loader(self, name: str) -> DataLoader:
        return DataLoader(_Batches(self.split(name), self.batch_size), batch_size=None, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("patching")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def save(self, directory: str | Path) -> None:
        """Write <directory>/<split>.jsonl for each split."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            self.split(name).to_jsonl(Path(directory) / f"{name}.jsonl")


def load_splits(directory: str | Path) -> dict[str, Split]:
    """Read the splits `TaskDataModule.save` wrote."""
    return {name: Split.from_jsonl(name, Path(directory) / f"{name}.jsonl") for name in SPLITS}


class TaskAccuracy(Metric):
    """Fraction of examples whose greedy tokens the task judges correct."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, task: str | Task, tokenizer: Tokenizer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.task = task if isinstance(task, Task) else get_task(task)
        self.tokenizer = tokenizer
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, generated: torch.Tensor, targets: torch.Tensor) -> None:
        need = self.task.n_new(self.tokenizer)
        if generated.dim() != 2 or generated.shape[1] < need or generated.shape[0] != targets.shape[0]:
            raise ValueError(f"generated must be (N, >= {need}) for {targets.shape[0]} targets, "
                             f"got {tuple(generated.shape)}")
        ok = self.task.correct(self.tokenizer, targets, generated)
        self.correct += ok.sum().to(self.correct.device)
        self.total += ok.numel()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total
