"""`bench distill` on a tiny random Llama teacher that uses the real SmolLM2 tokenizer."""
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from bench.cli import main
from bench.report.curves import read_scalars
from bench.core.distillation import DistillationModule, l_distill, size_student
from models.io import load_pruned
from models.pruned import PrunedConfig, count_params_of
from models.types import BenchError

SMALL = ["--n-val", "4", "--n-test", "4"]
EXTRACT_SMALL = ["--n-patching", "4", "--fit-steps", "5", *SMALL]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, teacher):
    out = tmp_path_factory.mktemp("extract") / "run"
    argv = ["extract", "--model", teacher, "--task", "ioi", "--alpha", "0.3", *EXTRACT_SMALL, "--out", str(out)]
    assert main(argv) == 0
    return out


def distill(teacher, out, *extra, shape=("--layers", "1", "--heads", "3", "--d-mlp", "16")) -> dict:
    argv = ["distill", "--task", "ioi", "--model", teacher, *shape, *SMALL, "--batch-size", "16", "--log-every", "1",
            "--out", str(out), *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def scalars(run, tag: str) -> dict[int, float]:
    return dict(read_scalars(run, tags=(tag,))[tag])


def test_l_distill_by_hand():
    s, t, y = torch.randn(3, 7), torch.randn(3, 7), torch.tensor([1, 2, 3])
    p_t, temp = torch.softmax(t / 2, -1), 2.0
    kl = (p_t * (p_t.log() - torch.log_softmax(s / 2, -1))).sum(-1).mean()
    expected = temp ** 2 * kl + 0.5 * torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(l_distill(s, t, y, temperature=temp, ce_weight=0.5), expected, atol=1e-6)
    assert float(l_distill(t, t)) == pytest.approx(0.0, abs=1e-6)


def test_student_learns_the_teacher_from_the_stream(teacher, tmp_path, capsys):
    m = distill(teacher, tmp_path / "d", "--steps", "30", "--lr", "0.01", "--val-every", "8")
    s, tr = m["student"], m["train"]
    assert s["test_kl_to_teacher"] < 0.9 * s["test_kl_to_teacher_at_init"]
    assert s["heldout_kl_to_teacher"] < s["heldout_kl_to_teacher_at_init"]  # it learns the task, not its prompts
    printed = capsys.readouterr().out
    assert tr["steps"] == 30 and tr["batch_size"] == 16 and "30 steps" in printed
    lines = [line for line in printed.splitlines() if line.startswith("step ")]  # not a terminal: a line each
    assert [line.split(":")[0] for line in lines] == ["step 8/30", "step 16/30", "step 24/30"]  # then the table
    assert "val/accuracy" in lines[0] and "heldout/kl" in lines[0]
    assert 30 * 16 * 0.95 <= tr["distinct_prompts"] <= 30 * 16  # fresh prompts every step
    loss = scalars(tmp_path / "d", "train/l_distill")
    assert len(loss) == 30 and sum(loss[k] for k in range(26, 31)) < 0.8 * sum(loss[k] for k in range(1, 6))
    for tag in ("val/kl", "val/accuracy", "heldout/kl", "heldout/accuracy"):
        assert sorted(scalars(tmp_path / "d", tag)) == [0, 8, 16, 24, 30], tag  # the start, every 8 and the end
    student, manifest = load_pruned(tmp_path / "d" / "student")
    assert manifest["circuit"] is None and manifest["distill"]["steps"] == 30
    norms, qkv, o, mlp = 3 * 48, 48 * 8 * (3 + 2 * 1), 3 * 8 * 48, 3 * 48 * 16
    assert count_params_of(student.cfg)["non_embedding"] == s["non_embedding"] == norms + qkv + o + mlp
    emb = load_file(f"{teacher}/model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(student.wte.weight, emb)  # copied and frozen
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["steps_run"] == 30 and config["args"]["steps"] == 30
    assert sorted(p.name for p in (tmp_path / "d" / "splits").iterdir()) == ["test-heldout.jsonl", "test.jsonl",
                                                                            "val.jsonl"]


def test_the_stream_is_seeded_fresh_and_never_holds_an_evaluation_prompt(teacher, smollm2_tokenizer):
    from bench.core.distill_data import TaskStream, eval_prompts
    from tasks import get_task
    from tasks.data import TaskDataModule

    task = get_task("ioi")
    dm = TaskDataModule(task, smollm2_tokenizer, 4, 40, 40, seed=0)
    exclude = eval_prompts(dm)
    stream = TaskStream(task, smollm2_tokenizer, 0, 16, exclude)
    first = [stream.examples(k) for k in range(20)]
    assert not {e.prompt for b in first for e in b} & exclude
    assert [e.prompt for e in TaskStream(task, smollm2_tokenizer, 0, 16, exclude, start=7).examples(7)] == [
        e.prompt for e in first[7]]  # a pure function of the step: --resume draws what it would have
    assert [e.prompt for e in first[0]] != [e.prompt for e in first[1]]
    assert stream.distinct(20) == len({e.prompt for b in first for e in b})
    other_rank = TaskStream(task, smollm2_tokenizer, 0, 16, exclude, rank=1)
    assert {e.prompt for e in other_rank.examples(0)} != {e.prompt for e in first[0]}
    banned = frozenset(e.prompt for e in first[3][:5])
    assert len(TaskStream(task, smollm2_tokenizer, 0, 16, banned).examples(3)) == 11


def test_the_pool_passes_over_its_prompts_as_a_function_of_the_step(smollm2_tokenizer):
    from bench.core.distill_data import TaskStream, TeacherPool, eval_prompts
    from tasks import get_task
    from tasks.data import TaskDataModule

    task = get_task("ioi")
    dm = TaskDataModule(task, smollm2_tokenizer, 4, 40, 40, seed=0)
    stream = TaskStream(task, smollm2_tokenizer, 0, 16, eval_prompts(dm))
    fake = lambda ids: ids.float().sum(-1, keepdim=True).repeat(1, 3)  # noqa: E731 - (N, 3) "logits" of the prompt
    pool = TeacherPool.build(stream, 40, fake, torch.device("cpu"))
    assert len({tuple(r) for r in pool.ids.tolist()}) == 40 and torch.equal(pool.logits, fake(pool.ids))
    assert not {smollm2_tokenizer.decode(r) for r in pool.ids.tolist()} & eval_prompts(dm)
    rows = torch.cat([pool.indices(k) for k in range(5)])  # 80 = two passes of 40
    assert sorted(rows[:40].tolist()) == sorted(rows[40:].tolist()) == list(range(40))
    assert not torch.equal(rows[:40], rows[40:])  # each pass in its own order
    b = pool.at(3, 0).batch(3)
    assert torch.equal(b["input_ids"], pool.ids[rows[48:64]]) and torch.equal(b["teacher"], fake(b["input_ids"]))
    assert next(iter(pool.at(3, 0)))["input_ids"].equal(b["input_ids"])  # --resume draws what it would have
    assert pool.distinct(1) == 16 and pool.distinct(3) == 40 and 16 < pool.distinct(1, ranks=2) <= 32


def test_a_pooled_student_learns_and_resumes_exactly(teacher, tmp_path):
    common = ("--teacher-pool", "24", "--ckpt-every", "2", "--val-every", "2", "--lr", "0.01")
    whole = distill(teacher, tmp_path / "a", "--steps", "6", *common)
    assert whole["train"]["distinct_prompts"] == 24 and whole["train"]["teacher_pool"] == 24
    assert whole["student"]["heldout_kl_to_teacher"] < whole["student"]["heldout_kl_to_teacher_at_init"]
    distill(teacher, tmp_path / "b", "--steps", "3", *common)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    del config["args"]["budget"]  # as a run made before --budget existed: it resumes at the default
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    resumed = distill(teacher, tmp_path / "b", "--steps", "6", "--resume", *common)
    for m in (whole, resumed):
        del m["train"]["wall_s"], m["train"]["resumed_from_step"], m["train"]["teacher_pool_s"]
    assert resumed == whole


def test_resume_after_a_crash_equals_an_uninterrupted_run(teacher, tmp_path, monkeypatch):
    common = ("--ckpt-every", "2", "--val-every", "2", "--lr", "0.01")
    whole = distill(teacher, tmp_path / "a", "--steps", "6", *common)
    distill(teacher, tmp_path / "b", "--steps", "3", *common)  # a short run, then extend it ...
    original = DistillationModule.on_train_batch_end

    def crash(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.global_step == 5:  # ... and kill it in step 6: last.ckpt holds step 4
            raise RuntimeError("killed")
    monkeypatch.setattr(DistillationModule, "on_train_batch_end", crash)
    with pytest.raises(RuntimeError, match="killed"):
        distill(teacher, tmp_path / "b", "--steps", "6", "--resume", *common)
    monkeypatch.undo()
    resumed = distill(teacher, tmp_path / "b", "--steps", "6", "--resume", *common)
    assert resumed["train"]["resumed_from_step"] == 4 and resumed["train"]["steps"] == 6
    for m in (whole, resumed):
        del m["train"]["wall_s"], m["train"]["resumed_from_step"]
    assert resumed == whole
    a, b = (load_file(tmp_path / x / "student" / "model.safetensors") for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert scalars(tmp_path / "a", "train/l_distill") == scalars(tmp_path / "b", "train/l_distill")


def test_match_sizes_the_student_and_uses_the_runs_prompts(teacher, run_dir, tmp_path):
    m = distill(teacher, tmp_path / "m", "--steps", "20", "--batch-size", "16", shape=("--match", str(run_dir)))
    assert m["train"]["steps"] == 20 and m["train"]["distinct_prompts"] >= 320
    target = json.loads((run_dir / "metrics.json").read_text())["pruned"]["non_embedding"]
    assert m["match"]["circuit_non_embedding"] == target
    assert abs(m["student"]["non_embedding"] / target - 1) <= 0.10
    for split in ("val", "test", "test-heldout"):
        name = f"{split}.jsonl"
        assert (tmp_path / "m" / "splits" / name).read_text() == (run_dir / "splits" / name).read_text()


def test_init_circuit_fine_tunes_the_pruned_model(teacher, run_dir, tmp_path):
    m = distill(teacher, tmp_path / "c", "--steps", "2", "--init", "circuit", shape=("--match", str(run_dir)))
    circuit, _ = load_pruned(run_dir / "pruned")
    student, _ = load_pruned(tmp_path / "c" / "student")
    assert m["student"]["non_embedding"] == m["match"]["circuit_non_embedding"]
    assert m["student"]["test_kl_to_teacher_at_init"] == pytest.approx(m["match"]["circuit_test_kl"], abs=1e-5)
    before, after = circuit.state_dict(), student.state_dict()
    assert torch.equal(before["wte.weight"], after["wte.weight"])  # frozen
    consts = [k for k in before if k.endswith(("attn_bias", "mlp_const"))]
    assert all(torch.equal(before[k], after[k]) for k in consts)  # folded constants stay fixed
    assert not torch.equal(before["ln_f.weight"], after["ln_f.weight"])  # everything else trains
    from bench.tools import kd_check

    out = tmp_path / "kd.md"
    assert kd_check.main(["--runs", str(tmp_path / "c"), "--out", str(out)]) == 0
    line = next(r for r in out.read_text().splitlines() if r.startswith("| c |"))
    assert f"{m['student']['heldout_kl_to_teacher_at_init']:.3f} → {m['student']['heldout_kl_to_teacher']:.3f}" in line
    assert "- lr 0.001: the held-out KL fell on " in out.read_text()
    assert kd_check.main(["--runs", str(run_dir)]) == 2  # an extraction is not a circuit + KD run


def test_sizing_picks_the_teachers_shape_within_ten_percent():
    base = PrunedConfig(family="llama", d_model=576, d_mlp=1536, n_heads=9, n_kv_heads=3, head_dim=64, vocab_size=49152,
                        eps=1e-5, rope_theta=1e5, n_positions=64, heads=[list(range(9))] * 30, mlps=[True] * 30,
                        scheme="zero")
    full = count_params_of(base)["non_embedding"]
    layers, heads, d_mlp = size_student(base, 3, 30, full // 2)
    assert (heads, layers) == (9, 15) and abs(d_mlp - 1536) < 20
    layers, heads, d_mlp = size_student(base, 3, 30, 500_000)  # below one full-head layer: fewer heads
    assert layers == 1 and heads < 9
    with pytest.raises(BenchError):
        size_student(base, 3, 30, 1000)


def _bad_runs(run_dir, tmp_path):
    corrupt, tiny = tmp_path / "run-corrupt", tmp_path / "run-tiny"
    for d in (corrupt, tiny):
        shutil.copytree(run_dir, d)
    (corrupt / "metrics.json").write_text("{not json")
    m = json.loads((tiny / "metrics.json").read_text())
    m["pruned"]["non_embedding"] = 10
    (tiny / "metrics.json").write_text(json.dumps(m))
    return corrupt, tiny


BAD = {
    "lr": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--lr", "0"],
    "steps": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--steps", "0"],
    "batch": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--batch-size", "0"],
    "precision": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--precision", "fp7"],
    "temperature": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--temperature", "0"],
    "nan": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--temperature", "nan"],
    "both": ["--match", "{run}", "--layers", "1", "--heads", "1", "--d-mlp", "4"],
    "neither": [],
    "partial": ["--layers", "1", "--heads", "1"],
    "missing": ["--match", "{tmp}/nowhere"],
    "corrupt": ["--match", "{corrupt}"],
    "unmatchable": ["--match", "{tiny}"],
    "circuit-without-run": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--init", "circuit"],
    "ce-greater-than": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--ce-weight", "1", "--task", "greater-than"],
    "resume-nothing": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--resume"],
    "occupied": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--out", "{run}"],
    "out-is-the-run": ["--match", "{run}", "--out", "{run}", "--overwrite"],
    "lr-word": ["--layers", "1", "--heads", "1", "--d-mlp", "4", "--lr", "fast"],
}


def test_bad_inputs_are_one_line_and_exit_2(teacher, run_dir, tmp_path, capsys):
    corrupt, tiny = _bad_runs(run_dir, tmp_path)
    before = sorted(p.name for p in run_dir.iterdir())
    for name, extra in BAD.items():
        extra = [a.format(run=run_dir, tmp=tmp_path, corrupt=corrupt, tiny=tiny) for a in extra]
        argv = ["distill", "--task", "ioi", "--model", teacher, "--out", str(tmp_path / name), *extra]
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (name, err)
        assert not (tmp_path / name).exists(), name
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing touched
    assert math.isfinite(json.loads((run_dir / "metrics.json").read_text())["pruned"]["non_embedding"])


def test_perf_benchmark_writes_its_table(teacher, tmp_path):
    from bench.core.latency import cpu_name
    from bench.tools.perf_distill import main as perf

    out = tmp_path / "perf.md"
    assert perf(["--model", teacher, "--steps", "2", "--warmup", "1", "--batch-size", "4", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| teacher forward |" in text and "| backward |" in text and "| `bench distill`'s Lightning loop |" in text
    assert "×** the hand-written loop's steps/s" in text and "of the hand-written step" in text
    assert torch.__version__ in text and "python -m bench.tools.perf_distill" in text
    assert f"cpu ({cpu_name()}, " in text  # the CPU by name, as runs and bench compare give it


def test_a_batch_that_cannot_fit_is_refused(teacher, tmp_path, monkeypatch, capsys):
    from bench.core import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024 ** 2)  # a 1 MB machine
    argv = ["distill", "--task", "ioi", "--model", teacher, "--layers", "1", "--heads", "1", "--d-mlp", "4",
            "--batch-size", "4096", "--out", str(tmp_path / "big")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size 4096 needs about" in err[0]
    assert not (tmp_path / "big").exists()


def test_in_a_terminal_the_bar_counts_steps_not_epochs(teacher, tmp_path, monkeypatch, capsys):
    import bench.core.distillation
    from rich.console import Console

    monkeypatch.setattr(bench.core.distillation, "Console", lambda: Console(force_terminal=True))
    distill(teacher, tmp_path / "t", "--steps", "3", "--val-every", "2")
    out = capsys.readouterr().out
    assert "3/3" in out and "Epoch" not in out and "train/l_distill" in out


@pytest.mark.parametrize("positions", ["last", "answers", "prompt"])
def test_every_loss_is_zero_at_the_teacher(teacher, positions):
    """The student that is the teacher (as an unpruned PrunedModel) has nothing to learn, wherever the loss is."""
    from bench.core.distill_data import TaskStream
    from models.ablation import no_means
    from models.loading import load_model
    from models.surgery import prune
    from tasks import get_task

    model, tok = load_model(teacher)
    task = get_task("greater-than")  # two answer tokens with this tokenizer: the second digit counts
    module = DistillationModule(prune(model, (), no_means()), model, task, tok, positions=positions)
    batch = TaskStream(task, tok, 0, 4, frozenset()).batch(0)
    assert float(module.training_step(batch, 0)) == pytest.approx(0.0, abs=1e-5)


def test_answer_positions_train_on_the_answers_and_count_them(teacher, tmp_path):
    m = distill(teacher, tmp_path / "a", "--task", "greater-than", "--positions", "answers", "--teacher-pool", "8",
                "--steps", "3", "--batch-size", "4")
    train = m["train"]
    t = len(json.loads((tmp_path / "a" / "splits" / "val.jsonl").read_text().splitlines()[0])["input_ids"])
    from bench.core.budget import StudentCost
    from bench.core.distillation import teacher_config
    from models.loading import load_model

    model, _ = load_model(teacher)
    student = load_pruned(tmp_path / "a" / "student")[0].cfg
    cost = StudentCost(student, teacher_config(model), 4, [t + 1], (8, t + 1), rows=lambda _: 2)
    assert (train["pool_macs"], train["train_macs"]) == (cost.pool_macs, cost.train_macs(3))
    assert main(["distill", "--task", "ioi", "--model", teacher, "--layers", "1", "--heads", "3", "--d-mlp", "16",
                 "--positions", "answers", "--ce-weight", "1", "--out", str(tmp_path / "b")]) == 2
