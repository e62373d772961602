"""What the greater-than models of a build answer, beyond accuracy: a model that always answers "99" scores 100%,
because every start year YY is 02..98 and `tasks/greater_than.correct` accepts any later two-digit year.

For every greater-than run under RUNS (circuits and students) and the full model on each run's test splits, on the
test and held-out-template splits:
- accuracy, as every verb scores it (`Task.correct` on the greedy answers);
- the most common greedy answer and its share of the prompts, and how many distinct answers there are;
- the probability difference of Hanna et al. (2023): the mass on answers after YY minus the mass on answers up to
  YY, over the two-digit answers (digits are split, so P("ab") = P(a) P(b | a));
- the wrong answers, by the digit that went wrong: the first (a < YY's tens) or the second (a = YY's tens, b <= its
  units). Students are distilled at the last prompt position only, which predicts the first digit.

    python scripts/greater_than_answers.py runs/smollm2-cpu

prints the table; results/greater-than-answers-smollm2-135m.md is its output on the CPU report's runs, under a
header that says how it was made.
"""
import sys
from collections import Counter
from pathlib import Path

import torch

from bench.verbs.compare import full_model
from models.generate import greedy
from models.io import load_pruned
from models.loading import load_model
from tasks import get_task
from tasks.base import encode
from tasks.data import Split

TASK = get_task("greater-than")
KINDS = ("extract", "extract-heads", "distill", "circuit-kd")


def digit_ids(tok) -> torch.Tensor:
    ids = [encode(tok, str(d)) for d in range(10)]
    if TASK.n_new(tok) != 2 or any(len(i) != 1 for i in ids):
        sys.exit("this probe is for tokenizers that split digits (two answer tokens, one per digit)")
    return torch.tensor([i[0] for i in ids])


@torch.inference_mode()
def measure(fn, tok, digits: torch.Tensor, split: Split) -> dict:
    ids, yy = split.input_ids, split.targets  # (N, T), (N,)
    tens, units, ar = yy // 10, yy % 10, torch.arange(10)
    answers = greedy(fn, ids, 2)  # (N, 2)
    p1 = fn(ids).float().softmax(-1)[:, digits]  # (N, 10): first digit
    p2 = fn(torch.cat([ids, digits[tens][:, None]], 1)).float().softmax(-1)[:, digits]  # (N, 10): second, given tens
    eq = p1.gather(1, tens[:, None])[:, 0]  # (N,)
    later = (p1 * (ar > tens[:, None])).sum(1) + eq * (p2 * (ar > units[:, None])).sum(1)
    not_later = (p1 * (ar < tens[:, None])).sum(1) + eq * (p2 * (ar <= units[:, None])).sum(1)
    texts = [tok.decode(a.tolist()).strip() for a in answers]
    mode, count = Counter(texts).most_common(1)[0]
    first = answers[:, 0] == digits[tens]
    wrong = ~TASK.correct(tok, yy, answers)
    return {"accuracy": 1 - float(wrong.float().mean()), "pd": float((later - not_later).mean()), "mode": mode,
            "mode_share": count / len(texts), "distinct": len(set(texts)),
            "wrong_first": int((wrong & ~first).sum()), "wrong_second": int((wrong & first).sum()), "n": len(texts)}


def rows(name: str, model, tok, digits, run: Path) -> list[str]:
    fn = lambda ids: model(ids, last_only=True)  # noqa: E731
    out = []
    for split in ("test", "test-heldout"):
        m = measure(fn, tok, digits, Split.from_jsonl(split, run / "splits" / f"{split}.jsonl"))
        out.append(f"| {name} | {split} | {m['accuracy']:.0%} | {m['pd']:.3f} "
                   f"| \"{m['mode']}\" ({m['mode_share']:.0%}) "
                   f"| {m['distinct']} | {m['wrong_first']} / {m['wrong_second']} of {m['n']} |")
    return out


def main(root: str) -> None:
    hf, tok = load_model("smollm2-135m")
    full, digits = full_model(hf), digit_ids(tok)
    print("| model | split | accuracy | probability difference | most common answer (share) | distinct answers "
          "| wrong: first digit / second |")
    print("| --- | --- | ---: | ---: | --- | ---: | --- |")
    for seed in sorted({p.name.rsplit("-s", 1)[1] for p in Path(root).glob("*greater-than-s*")}):
        runs = [Path(root) / f"{k}-greater-than-s{seed}" for k in KINDS]
        print("\n".join(rows(f"full model (s{seed} splits)", full, tok, digits, runs[0])), flush=True)
        for run in runs:
            model, _ = load_pruned(run / ("pruned" if run.name.startswith("extract") else "student"))
            print("\n".join(rows(run.name, model, tok, digits, run)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/smollm2-cpu")
