"""`bench export` on tiny extraction runs: the written ONNX file (run by onnxruntime) and torch.export program give
our pruned model's logits, at other batch sizes and, for a position-free model, at other lengths."""
from __future__ import annotations

import json

import pytest
import torch

from bench.verbs.export import runner
from models.io import load_pruned
from tests.test_cli import MAIN_ALPHA, extract_argv, run_ok

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, tiny_gpt2_dir, tmp_path_factory) -> dict[str, object]:
    """A per-position Llama run and a position-free (mean-pooled) GPT-2 run, each with removed components."""
    root = tmp_path_factory.mktemp("export-runs")
    run_ok(extract_argv(tiny_llama_dir, root / "llama", alpha=MAIN_ALPHA))
    run_ok(extract_argv(tiny_gpt2_dir, root / "gpt2", alpha="0.05", ablation="mean-pooled"))
    for name in ("llama", "gpt2"):  # folded constants and kept weights both take part
        cfg = load_pruned(root / name / "pruned")[0].cfg
        kept = sum(map(len, cfg.heads)) + sum(cfg.mlps)
        assert 0 < kept < cfg.n_layers * (cfg.n_heads + 1), (name, cfg.heads, cfg.mlps)
    return {"llama": root / "llama", "gpt2": root / "gpt2"}


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_export_gives_our_logits(runs, family, fmt, tmp_path):
    run, out = runs[family], tmp_path / f"model.{fmt}"
    run_ok(["export", "--run", str(run), "--format", fmt, "--out", str(out)])
    info = json.loads(out.with_name(out.name + ".json").read_text())
    assert info["max_abs_difference"] <= 1e-4 and info["checked_prompts"] == 6
    model, _ = load_pruned(run / "pruned")
    fn, t = runner(fmt, out), info["positions"][1]
    lengths = [t] if model.cfg.positional else [1, 7, 11]  # a position-free model takes any length
    g = torch.Generator().manual_seed(0)
    for n, length in zip([1, 5, 3], lengths * 3):
        ids = torch.randint(0, model.cfg.vocab_size, (n, min(length, t)), generator=g)
        with torch.inference_mode():
            assert torch.allclose(fn(ids), model(ids, last_only=True), atol=1e-4, rtol=0)


def test_export_refuses_to_overwrite_and_bad_formats(runs, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_text("mine")
    from bench.cli import main

    assert main(["export", "--run", str(runs["llama"]), "--out", str(out)]) == 2
    assert main(["export", "--run", str(runs["llama"]), "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "exists; pass --overwrite" in err[0] and "not one of onnx, torch-export" in err[1]
    assert out.read_text() == "mine"


def test_a_file_that_disagrees_is_not_kept(runs, tmp_path, monkeypatch, capsys):
    import bench.verbs.export as export

    wrong = lambda fmt, path: (lambda ids: torch.zeros(len(ids), 1))  # noqa: E731
    monkeypatch.setattr(export, "runner", wrong)
    from bench.cli import main

    out = tmp_path / "model.pt2"
    assert main(["export", "--run", str(runs["llama"]), "--format", "torch-export", "--out", str(out)]) == 2
    assert "differ from ours" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
