"""bench.tools.record: an extraction run kept without its weights, and rebuilt from that record bit for bit."""
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bench.tools.record
from bench.cli import main
from bench.verbs.evaluate import EvaluateArgs, evaluate
from bench.tools.record import FOLDED, PRUNED, RECORD, main as record, sha256
from models.io import CONSTANTS


@pytest.fixture(scope="module")
def run(teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("record") / "run"
    assert main(["extract", "--task", "ioi", "--model", teacher, "--n-patching", "4", "--n-val", "4", "--n-test", "4",
                 "--alpha", "0.5", "--fit-steps", "3", "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_a_restored_run_has_the_runs_own_weights_and_scores(run, tmp_path):
    rec, back = tmp_path / "rec", tmp_path / "back"
    assert record(["save", str(run), str(rec)]) == 0
    assert not (rec / PRUNED).exists() and (rec / CONSTANTS).is_file() and (rec / "pruned" / "manifest.json").is_file()
    assert record(["restore", str(rec), str(back)]) == 0
    assert sha256(back / PRUNED) == sha256(run / PRUNED)
    assert not (back / RECORD).exists() and not (back / FOLDED).exists()
    assert sorted(p.relative_to(back) for p in back.rglob("*")) == sorted(p.relative_to(run) for p in run.rglob("*"))
    assert evaluate(EvaluateArgs(str(back), device="cpu")) == evaluate(EvaluateArgs(str(run), device="cpu"))


def test_a_record_whose_constants_changed_is_refused_in_one_line(run, tmp_path, capsys):
    rec = tmp_path / "rec"
    assert record(["save", str(run), str(rec)]) == 0
    tensors = load_file(rec / CONSTANTS)
    tensors["mlp"] = tensors["mlp"] + 1.0
    with safe_open(str(rec / CONSTANTS), "pt") as f:
        meta = f.metadata()
    save_file(tensors, str(rec / CONSTANTS), metadata=meta)
    with pytest.raises(SystemExit) as e:
        record(["restore", str(rec), str(tmp_path / "back")])
    assert e.value.code == 2 and "differ from the run's" in capsys.readouterr().err
    assert not (tmp_path / "back").exists()  # nothing half-written is left


def test_records_never_replace_and_need_a_finished_extraction(run, tmp_path, capsys):
    rec = tmp_path / "rec"
    assert record(["save", str(run), str(rec)]) == 0
    for argv, says in ((["save", str(run), str(rec)], "already holds results"),
                       (["save", str(rec), str(tmp_path / "r2")], "has no pruned/model.safetensors"),
                       (["restore", str(run), str(tmp_path / "r3")], "record.json")):
        with pytest.raises(SystemExit) as e:
            record(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_a_restore_on_a_cpu_that_rounds_the_folded_constants_otherwise_gets_the_runs_weights(run, tmp_path,
                                                                                               monkeypatch):
    """Surgery folds the removed heads' constants with a matmul, whose last bits depend on the CPU's kernels."""
    rec, back = tmp_path / "rec", tmp_path / "back"
    assert record(["save", str(run), str(rec)]) == 0
    prune = bench.tools.record.prune

    def another_cpu(*args, **kw):
        model = prune(*args, **kw)
        for name, b in model.named_buffers():
            if name.endswith("attn_bias"):
                b.mul_(1 + 1e-6)
        return model

    monkeypatch.setattr(bench.tools.record, "prune", another_cpu)
    assert record(["restore", str(rec), str(back)]) == 0
    assert sha256(back / PRUNED) == sha256(run / PRUNED)
