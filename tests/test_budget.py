"""Build cost in MACs: counted from the shapes that ran, by hand on a tiny model, and a student trained for its
circuit's MACs."""
import json

import pytest

from bench.cli import main
from bench.core.budget import matched_steps, pool_macs, student_step_macs, training_macs
from bench.core.distillation import student_config, teacher_config
from models.ablation import collect_means
from models.arch import shape_of
from models.macs import pruned_macs, reference_macs
from models.surgery import prune
from models.types import Component
from tests.tiny import VOCAB, tiny_ids, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_pruned_forward_by_hand():
    """tiny_llama: d 48, head_dim 8, 6 heads in 2 K/V groups of 3, d_mlp 64 (gated: 3 matrices), 3 layers."""
    model = tiny_llama()
    removed = {Component(0, h) for h in range(3)} | {Component(1)}  # layer 0 loses a K/V group, layer 1 its MLP
    cfg = prune(model, removed, collect_means(model, tiny_ids(), "mean-pooled")).cfg
    layer0 = 2 * 3 * 8 * 48 + 2 * 1 * 8 * 48 + 3 * 48 * 64  # Q, O of 3 heads; K, V of 1 group; the MLP
    layer1 = 2 * 6 * 8 * 48 + 2 * 2 * 8 * 48  # every head, no MLP
    layer2 = layer1 + 3 * 48 * 64
    assert pruned_macs(cfg, tokens=10, rows=2) == 10 * (layer0 + layer1 + layer2) + 2 * 48 * VOCAB
    full = teacher_config(model)  # nothing removed: the HF forward with logits everywhere
    assert pruned_macs(full, 4 * 7, 4 * 7) == reference_macs(shape_of(model), 4, 7)


def test_a_students_steps_and_pool_by_hand():
    teacher = teacher_config(tiny_llama())
    student = student_config(teacher, 3, 1, 3, 16)  # 1 layer, 3 heads (1 K/V group), d_mlp 16
    fwd = lambda tokens, rows: tokens * (2 * 3 * 8 * 48 + 2 * 8 * 48 + 3 * 48 * 16) + rows * 48 * VOCAB  # noqa: E731
    assert student_step_macs(student, teacher, 4, 5, pooled=True) == 3 * fwd(20, 4)
    assert student_step_macs(student, teacher, 4, 5, pooled=False) == 3 * fwd(20, 4) + pruned_macs(teacher, 20, 4)
    assert pool_macs(teacher, 10, 5) == pruned_macs(teacher, 50, 10)
    a, b = (student_step_macs(student, teacher, 4, t, True) for t in (5, 7))
    assert training_macs(student, teacher, 4, [5, 7], True, steps=3, world=2) == 2 * (a + b + a)


def test_matched_steps_stop_within_one_step_of_the_target():
    teacher = teacher_config(tiny_llama())
    student = student_config(teacher, 3, 1, 3, 16)
    a, b = (student_step_macs(student, teacher, 4, t, True) for t in (5, 7))
    assert matched_steps(100 + 2 * a + b, 100, student, teacher, 4, [5, 7], True) == 3  # exactly reached
    assert matched_steps(100 + 2 * a + b + 1, 100, student, teacher, 4, [5, 7], True) == 4
    assert matched_steps(10 * (a + b) - 1, 0, student, teacher, 4, [5, 7], True) == 20
    assert matched_steps(5, 10, student, teacher, 4, [5], True) == 1  # the pool alone is over it: one step still


def test_extract_records_its_build_and_distill_matches_it(teacher, tmp_path):
    run, small = tmp_path / "run", ["--n-patching", "4", "--n-val", "4", "--n-test", "4"]
    assert main(["extract", "--model", teacher, "--task", "ioi", "--alpha", "0.3", *small, "--fit-steps", "5",
                 "--out", str(run)]) == 0
    build = json.loads((run / "metrics.json").read_text())["build"]
    assert build["macs"] == build["means_macs"] + build["search_macs"] + build["fit_macs"]
    assert min(build.values()) > 0
    out = tmp_path / "student"
    assert main(["distill", "--task", "ioi", "--match", str(run), "--budget", "matched", "--teacher-pool", "32",
                 "--batch-size", "8", "--val-every", "1000", "--out", str(out)]) == 0
    train = json.loads((out / "metrics.json").read_text())["train"]
    step = train["train_macs"] / train["steps"]  # one length: every step costs the same
    assert train["target_macs"] == build["macs"] and train["budget"] == "matched"
    assert train["macs"] >= build["macs"] > train["macs"] - step
    assert train["paper_share"] == train["steps"] / 20000
