"""The cached-teacher benchmark: its bounded (top-k + rest) loss, and `python -m bench.tools.perf_teacher` on a tiny
model."""
import pytest
import torch

from bench.core.distillation import l_distill
from bench.core.latency import cpu_name
from bench.tools.perf_teacher import l_distill_top_k, main as perf_teacher, top_k_targets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_top_k_loss_is_zero_at_the_teacher_and_below_the_full_kl():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(5, 50, generator=g) * 3, torch.randn(5, 50, generator=g) * 3
    idx, log_t = top_k_targets(teacher, 8)
    assert torch.allclose(log_t.exp().sum(-1), torch.ones(5))  # k tokens and the rest: a distribution
    assert float(l_distill_top_k(teacher, idx, log_t)) == pytest.approx(0.0, abs=1e-6)
    bounded, full = float(l_distill_top_k(student, idx, log_t)), float(l_distill(student, teacher))
    assert 0 < bounded <= full  # merging bins never adds divergence
    idx, log_t = top_k_targets(teacher, 49)  # one token left over: the bins are the tokens
    assert float(l_distill_top_k(student, idx, log_t)) == pytest.approx(full, rel=1e-5)


def test_perf_teacher_trains_three_ways_and_writes_the_table(teacher, tmp_path):
    out = tmp_path / "teacher.md"
    argv = ["--model", teacher, "--steps", "3", "--batch-size", "4", "--pool", "6", "--top-k", "5", "--n-eval", "4",
            "--device", "cpu", "--out", str(out)]
    assert perf_teacher(argv) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][2:]
    assert [r.split("|")[1].strip() for r in rows] == ["(untrained student)", "in the step, fresh stream",
                                                       "cached pool, full logits", "cached pool, top-k + rest"]
    assert [r.split("|")[2].strip() for r in rows[2:]] == ["6", "6"]  # the pool's distinct prompts
    assert f"cpu ({cpu_name()}, " in out.read_text()  # the CPU by name, as runs and bench compare give it


def test_perf_teacher_refuses_a_top_k_with_no_rest(teacher, capsys):
    assert perf_teacher(["--model", teacher, "--top-k", "10000000", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith("error: --top-k must be below")
