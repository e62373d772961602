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


# ---- --format hf: a Hugging Face directory that loads without circuit-bench ------------------------------------

LOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM
out = {}
for directory in sys.argv[1:]:
    ref = torch.load(directory + "/../ref.pt")
    m = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
    with torch.inference_mode():
        diff = float((m(ref["ids"]).logits - ref["logits"]).abs().max())
        one = ref["ids"][:1]
        gen = [m.generate(one, attention_mask=torch.ones_like(one), max_new_tokens=5, min_new_tokens=5,
                          do_sample=False, use_cache=cache)[:, one.shape[1]:].tolist() for cache in (True, False)]
    out[directory] = {"diff": diff, "generated": gen}
ours = sorted(k for k in sys.modules if k.split(".")[0] in ("bench", "models", "tasks", "tests"))
print(json.dumps({"runs": out, "ours": ours}))
"""
FAMILIES = ["gpt2", "llama-gqa", "qwen2", "mistral", "neox", "neox-sequential", "gemma3"]


def test_hf_directories_load_alone_and_give_our_logits(tmp_path, smollm2_tokenizer):
    """Every family's export loads in one clean process (no project module imported) with trust_remote_code:
    logits at every position within 1e-4 of ours, and generate() with and without the KV cache gives our greedy
    tokens."""
    import subprocess
    import sys

    from models.ablation import collect_means
    from models.generate import greedy
    from models.hf_export import write_hf
    from models.surgery import prune
    from tests.test_surgery import MODELS, random_removed
    from tests.tiny import tiny_ids

    ours = {}
    for arch in FAMILIES:
        model = MODELS[arch](1)
        pruned = prune(model, random_removed(model, 1), collect_means(model, tiny_ids(8, 10, seed=3), "mean-pooled"))
        out = tmp_path / arch / "hf"
        out.mkdir(parents=True)
        write_hf(pruned, smollm2_tokenizer, out, "# a tiny model\n")
        ids = tiny_ids(3, 9, seed=5)
        with torch.inference_mode():
            torch.save({"ids": ids, "logits": pruned(ids)}, tmp_path / arch / "ref.pt")
            ours[str(out)] = greedy(lambda x: pruned(x, last_only=True), ids[:1], 5).tolist()
    r = subprocess.run([sys.executable, "-c", LOAD, *ours], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["ours"] == []  # torch and transformers only
    for directory, tokens in ours.items():
        run = got["runs"][directory]
        assert run["diff"] <= 1e-4 and run["generated"] == [tokens] * 2, directory  # with the KV cache and without


def test_hf_export_of_a_run_and_a_refused_per_position_one(runs, tmp_path, capsys):
    out = tmp_path / "hf"
    run_ok(["export", "--run", str(runs["gpt2"]), "--format", "hf", "--out", str(out)])
    info = json.loads((tmp_path / "hf.json").read_text())
    assert info["format"] == "hf" and info["max_abs_difference"] <= 1e-4
    assert {"config.json", "model.safetensors", "modeling_circuit.py", "configuration_circuit.py",
            "generation_config.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == \
        "modeling_circuit.CircuitForCausalLM"
    assert "bench extract --task ioi" in (out / "README.md").read_text()
    from bench.cli import main

    capsys.readouterr()
    assert main(["export", "--run", str(runs["gpt2"]), "--format", "hf", "--out", str(out)]) == 2  # exists
    assert main(["export", "--run", str(runs["llama"]), "--format", "hf", "--out", str(tmp_path / "mean")]) == 2
    err = capsys.readouterr().err
    assert "exists; pass --overwrite" in err and "per-position (--ablation mean) model" in err
    assert not (tmp_path / "mean").exists() and not list(tmp_path.glob(".mean*"))


def test_hf_generation_costs_one_position_per_new_token(tmp_path, smollm2_tokenizer):
    """With the KV cache, generate() runs the prompt once, then one position per new token; the pruned model's
    cached forward equals its plain one on every family (tests/test_surgery.py)."""
    from transformers import AutoModelForCausalLM

    from models.ablation import collect_means
    from models.hf_export import write_hf
    from models.surgery import prune
    from tests.test_surgery import MODELS, random_removed
    from tests.tiny import tiny_ids

    model = MODELS["llama-gqa"](1)
    pruned = prune(model, random_removed(model, 1), collect_means(model, tiny_ids(8, 10, seed=3), "mean-pooled"))
    write_hf(pruned, smollm2_tokenizer, tmp_path, "#\n")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), trust_remote_code=True)
    seen, cached = [], hf.model.cached
    hf.model.cached = lambda ids, cache=None: (seen.append(ids.shape[1]), cached(ids, cache))[1]
    ids = tiny_ids(1, 9, seed=5)
    hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert seen == [9, 1, 1, 1]


def test_hf_export_of_a_distilled_student(runs, tmp_path):
    student = tmp_path / "student"
    run_ok(["distill", "--task", "ioi", "--match", str(runs["gpt2"]), "--steps", "2", "--batch-size", "4",
            "--n-val", "4", "--out", str(student)])
    run_ok(["export", "--run", str(student), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert json.loads((tmp_path / "hf.json").read_text())["max_abs_difference"] <= 1e-4
    assert "a student distilled from" in (tmp_path / "hf" / "README.md").read_text()
