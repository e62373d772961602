"""End-to-end tests of the `bench` verbs through `bench.cli.main(argv)`, on tiny random HF models saved as local
directories with the real SmolLM2 tokenizer (litgpt-style: real verbs, tiny configs, everything under tmp_path)."""
from __future__ import annotations

import dataclasses
import os
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from bench.core import memory
from bench.cli import main
from bench.report.curves import read_scalars
from bench.verbs.extract import ExtractArgs
from models import loading
from models.ablation import hooked_logits
from models.io import CONSTANTS, load_means, load_pruned
from models.types import Circuit
from tasks.data import Split
from tests.tiny import gpt2_for, save_dir

SMALL = ["--n-patching", "4", "--n-val", "4", "--n-test", "6", "--fit-steps", "5"]  # test_fitting fits longer
SIZES = {"patching": 4, "val": 4, "test": 6, "test-heldout": 6}  # test-heldout: as many as --n-test
# alphas chosen (seed 0, these tiny models) so the circuit keeps some candidates and removes others, with every
# decision at least ~0.003 away from the threshold (so float noise cannot flip one)
MAIN_ALPHA = "0.1"  # ioi / llama / mean: keeps 5 of 10
GPT2_IOI_ALPHA = "0.05"  # ioi / gpt2: mean removes all 6, zero keeps 2
SHAPES = {"llama": (2, 4), "gpt2": (2, 2)}  # (n_layers, n_heads)
DIGIT = "5"  # the digit-biased GPT-2 always answers DIGIT DIGIT


# ---- tiny models ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def digit_gpt2_dir(smollm2_tokenizer, tmp_path_factory) -> Path:
    """A GPT-2 whose next token is always DIGIT: ln_f's weight is 0 and its bias points at DIGIT's (enlarged,
    tied) embedding. On greater-than (digits are split by SmolLM2) it answers DIGIT DIGIT, so its accuracy is
    exactly the fraction of prompts whose start year YY < DIGIT DIGIT: an oracle that needs no model."""
    (t,) = smollm2_tokenizer.encode(DIGIT, add_special_tokens=False)
    model = gpt2_for(smollm2_tokenizer, seed=1)
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[t] *= 3
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(2 * wte[t])
    return save_dir(model, smollm2_tokenizer, tmp_path_factory.mktemp("digit-gpt2"))


@pytest.fixture(scope="session")
def model_dirs(tiny_llama_dir, tiny_gpt2_dir) -> dict[str, Path]:
    return {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir}


# ---- helpers -------------------------------------------------------------------------------------------

def extract_argv(model_dir: Path, out: Path, task: str = "ioi", *, alpha: str, ablation: str = "mean",
                 seed: int = 0, engine: str = "fast", extra: tuple[str, ...] = ()) -> list[str]:
    return ["extract", "--task", task, "--model", str(model_dir), *SMALL, "--alpha", alpha, "--ablation", ablation,
            "--seed", str(seed), "--engine", engine, "--device", "cpu", "--dtype", "float32", "--out", str(out),
            *extra]


def run_ok(argv: list[str]) -> None:
    rc = main(argv)
    assert rc == 0, f"bench {' '.join(argv)} exited {rc}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for directories): a snapshot to prove nothing changed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def tb_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    assert list((run / "tb").glob("events.out.tfevents.*"))
    return read_scalars(run, tags=None)  # every event file of the run, in the order written


def hf_non_embedding(model_dir: Path) -> int:
    """Non-embedding parameter count of the full HF model, counted independently of the bench code."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return sum(p.numel() for n, p in model.named_parameters()
               if not any(k in n for k in ("wte", "wpe", "embed_tokens", "lm_head")))


def check_run(out: Path, *, task: str, model_dir: Path, arch: str, alpha: str, ablation: str, seed: int = 0,
              include_mlps: bool = True, engine: str = "fast", sizes: dict = SIZES) -> dict:
    """Everything a run directory must hold; returns the parsed circuit."""
    n_layers, n_heads = SHAPES[arch]
    assert not list(out.parent.glob(f".{out.name}.partial-*")), "a partial directory was left behind"

    c = read_json(out / "circuit.json")
    assert (c["task"], c["model"], c["alpha"], c["ablation"], c["seed"]) == (task, str(model_dir), float(alpha),
                                                                            ablation, seed)
    assert c["include_mlps"] is include_mlps and (c["n_layers"], c["n_heads"]) == (n_layers, n_heads)
    assert all(isinstance(h, list) and len(h) == 2 for h in c["heads"]), c["heads"]
    heads = {tuple(h) for h in c["heads"]}
    assert heads <= {(l, h) for l in range(n_layers) for h in range(n_heads)} and len(heads) == len(c["heads"])
    assert c["heads"] == sorted(c["heads"]) and c["mlps"] == sorted(set(c["mlps"]))
    assert set(c["mlps"]) <= set(range(n_layers))
    if not include_mlps:
        assert c["mlps"] == list(range(n_layers))

    for name, n in sizes.items():
        rows = jsonl(out / "splits" / f"{name}.jsonl")
        assert len(rows) == n, name
        assert all(set(r) == {"prompt", "answer", "input_ids", "target"} for r in rows)
    prompts = [r["prompt"] for s in sizes for r in jsonl(out / "splits" / f"{s}.jsonl")]
    assert len(set(prompts)) == len(prompts), "splits overlap or repeat a prompt"

    m = read_json(out / "metrics.json")
    full, pruned = m["full"], m["pruned"]
    assert full["non_embedding"] == hf_non_embedding(model_dir)
    assert 0 < pruned["non_embedding"] <= full["non_embedding"]
    for split in ("test", "heldout"):
        for acc in (full[f"{split}_accuracy"], pruned[f"{split}_accuracy"]):
            assert 0.0 <= acc <= 1.0 and (acc * sizes["test"]).is_integer()  # a fraction of the test prompts
        assert math.isfinite(pruned[f"{split}_kl_to_full"]) and pruned[f"{split}_kl_to_full"] >= 0
    assert 0 < m["search"]["wall_s"] < 300 and m["search"]["engine"] == engine

    cfg = read_json(out / "config.json")
    assert cfg["command"] == "extract"
    train, held = cfg["templates"]["training"], cfg["templates"]["heldout"]
    assert len(train) >= 4 and len(held) >= 2 and not set(train) & set(held)
    assert set(cfg["args"]) == {f.name for f in dataclasses.fields(ExtractArgs)}
    assert {k: cfg["args"][k] for k in ("task", "model", "alpha", "ablation", "include_mlps", "n_patching", "n_val",
                                        "n_test", "seed", "out", "engine", "device", "dtype")} == {
        "task": task, "model": str(model_dir), "alpha": float(alpha), "ablation": ablation,
        "include_mlps": include_mlps, "n_patching": sizes["patching"], "n_val": sizes["val"],
        "n_test": sizes["test"], "seed": seed, "out": str(out), "engine": engine, "device": "cpu",
        "dtype": "float32"}

    manifest = read_json(out / "pruned" / "manifest.json")
    assert manifest["format"] == "circuit-bench/pruned-v1" and manifest["circuit"] == c
    assert [len(hs) for hs in manifest["config"]["heads"]] == [sum(l == i for l, _ in c["heads"])
                                                               for i in range(n_layers)]
    assert manifest["config"]["mlps"] == [i in c["mlps"] for i in range(n_layers)]
    with safe_open(str(out / "pruned" / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 0
    check_constants(out, model_dir, c)

    # one step per candidate, last layer first, each layer's heads then its MLP; removed <=> not in the circuit
    order = [name for l in reversed(range(n_layers))
             for name in [*(f"L{l}.H{h}" for h in range(n_heads)), *([f"L{l}.MLP"] if include_mlps else [])]]
    steps = jsonl(out / "steps.jsonl")
    assert [s["component"] for s in steps] == order and [s["index"] for s in steps] == list(range(len(order)))
    kept = {f"L{l}.H{h}" for l, h in c["heads"]} | {f"L{l}.MLP" for l in c["mlps"]}
    assert {s["component"] for s in steps if not s["removed"]} == kept - (
        set() if include_mlps else {f"L{l}.MLP" for l in range(n_layers)})
    assert all(s["removed"] == (s["delta"] < float(alpha)) for s in steps)

    check_tensorboard(out, steps, m, len(order))
    removed = any(s["removed"] for s in steps)
    assert m["fit"]["steps"] == (cfg["args"]["fit_steps"] if removed and ablation != "zero" else 0)
    pooled_fit = m["fit"]["steps"] and ablation == "mean-pooled"  # per-position constants are fitted unjittered
    assert m["fit"]["jitter"] == (cfg["args"]["fit_jitter"] if pooled_fit else 0)
    search_length = len(jsonl(out / "splits" / "test.jsonl")[0]["input_ids"])  # per-position: that length alone
    assert (search_length in m["fit"]["lengths"]) == bool(m["fit"]["steps"])
    assert len(m["fit"]["lengths"]) > 1 if pooled_fit and cfg["args"]["fit_every_length"] else len(
        m["fit"]["lengths"]) <= 1
    assert len(tb_scalars(out).get("fit/kl", [])) == m["fit"]["steps"]  # the fit's curve, a point per step
    return c


def check_constants(out: Path, model_dir: Path, circuit: dict) -> None:
    """The run's constants (fitted after the search) rebuild the hook-ablated model its pruned model equals."""
    model, _ = loading.load_model(str(model_dir))
    constants = load_means(out / CONSTANTS)
    assert constants.scheme == circuit["ablation"]
    pruned, _ = load_pruned(out / "pruned")
    ids = Split.from_jsonl("test", out / "splits" / "test.jsonl").input_ids
    ref = hooked_logits(model, ids, Circuit.from_dict(circuit).removed(), constants)
    assert torch.allclose(pruned(ids, last_only=True), ref, atol=1e-4, rtol=0)


def check_tensorboard(out: Path, steps: list[dict], m: dict, n_steps: int) -> None:
    """One point per candidate; search/kl is the kept state's KL and ends at the search's; final test metrics and
    the resolved options (hparams.yaml) are there too."""
    scalars = tb_scalars(out)
    for tag in ("search/kl", "search/candidate_kl", "search/removed", "search/non_embedding_params"):
        assert [step for step, _ in scalars[tag]] == list(range(n_steps)), tag
    kept, running = 0.0, []
    for s in steps:
        kept = s["kl"] if s["removed"] else kept
        running.append(kept)
    assert [v for _, v in scalars["search/kl"]] == pytest.approx(running, rel=1e-5, abs=1e-7)
    assert scalars["search/kl"][-1][1] == pytest.approx(m["search"]["val_kl"], rel=1e-5, abs=1e-7)
    assert [v for _, v in scalars["search/candidate_kl"]] == pytest.approx([s["kl"] for s in steps], rel=1e-5,
                                                                             abs=1e-7)
    assert [v for _, v in scalars["search/removed"]] == [sum(s["removed"] for s in steps[:i + 1])
                                                         for i in range(n_steps)]
    params = [v for _, v in scalars["search/non_embedding_params"]]
    assert params == sorted(params, reverse=True) and params[-1] == m["pruned"]["non_embedding"]
    assert scalars["final/pruned_test_accuracy"][-1][1] == pytest.approx(m["pruned"]["test_accuracy"])
    assert scalars["final/full_heldout_accuracy"][-1][1] == pytest.approx(m["full"]["heldout_accuracy"])
    hparams = (out / "tb" / "hparams.yaml").read_text()
    assert "alpha:" in hparams and "n_val:" in hparams


# ---- runs shared by several tests ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def llama_ioi(model_dirs, runs) -> Path:
    out = runs / "llama-ioi"
    run_ok(extract_argv(model_dirs["llama"], out, alpha=MAIN_ALPHA))
    return out


@pytest.fixture(scope="module")
def gpt2_ioi(model_dirs, runs) -> Path:
    out = runs / "gpt2-ioi"
    run_ok(extract_argv(model_dirs["gpt2"], out, alpha=GPT2_IOI_ALPHA))
    return out


# ---- extract: end to end -------------------------------------------------------------------------------

def test_main_run_directory(llama_ioi, model_dirs, capsys):
    c = check_run(llama_ioi, task="ioi", model_dir=model_dirs["llama"], arch="llama", alpha=MAIN_ALPHA,
                  ablation="mean")
    # the circuit is neither everything nor nothing, so the checks in check_run tell kept from removed
    assert 0 < len(c["heads"]) + len(c["mlps"]) < 10
    m = read_json(llama_ioi / "metrics.json")
    assert m["pruned"]["non_embedding"] < m["full"]["non_embedding"]
    assert m["search"]["steps"] == 10


@pytest.mark.parametrize("task,arch,ablation,alpha", [  # ioi: the main run and test_mean_and_zero_ablation_differ
    ("acronyms", "llama", "zero", "0.1"),
    ("acronyms", "gpt2", "mean-pooled", "0.015"),
    ("greater-than", "llama", "mean", "0.07"),
    ("greater-than", "gpt2", "zero", "0.05"),
])
def test_extract_each_task(task, arch, ablation, alpha, model_dirs, tmp_path, smollm2_tokenizer):
    out = tmp_path / "run"
    run_ok(extract_argv(model_dirs[arch], out, task, alpha=alpha, ablation=ablation))
    c = check_run(out, task=task, model_dir=model_dirs[arch], arch=arch, alpha=alpha, ablation=ablation)
    n_layers, n_heads = SHAPES[arch]
    assert 0 < len(c["heads"]) + len(c["mlps"]) < n_layers * (n_heads + 1)  # alpha kept some, removed some
    m = read_json(out / "metrics.json")
    assert m["pruned"]["non_embedding"] < m["full"]["non_embedding"]
    if ablation == "zero" and arch == "llama":  # nothing to fold: zero ablation of bias-free components is 0
        assert m["pruned"]["constants"] == 0
    for row in jsonl(out / "splits" / "test.jsonl"):
        if task != "acronyms":  # acronyms builds its ids directly
            assert row["input_ids"] == smollm2_tokenizer.encode(row["prompt"], add_special_tokens=False)


def test_fit_every_length_fits_position_free_constants_on_every_training_length(model_dirs, tmp_path):
    out = tmp_path / "run"
    run_ok(extract_argv(model_dirs["gpt2"], out, alpha="0.05", ablation="mean-pooled", extra=("--fit-every-length",)))
    c = check_run(out, task="ioi", model_dir=model_dirs["gpt2"], arch="gpt2", alpha="0.05", ablation="mean-pooled")
    assert c["heads"] or c["mlps"]
    assert read_json(out / "config.json")["args"]["fit_every_length"] is True
    lengths = read_json(out / "metrics.json")["fit"]["lengths"]
    assert len(lengths) >= 5 and lengths == sorted(lengths)  # IOI: the search's 15 tokens and six others


def test_mean_and_zero_ablation_differ(gpt2_ioi, model_dirs, tmp_path):
    out = tmp_path / "zero"
    run_ok(extract_argv(model_dirs["gpt2"], out, alpha=GPT2_IOI_ALPHA, ablation="zero"))
    common = dict(task="ioi", model_dir=model_dirs["gpt2"], arch="gpt2", alpha=GPT2_IOI_ALPHA)
    assert check_run(gpt2_ioi, ablation="mean", **common)["heads"] == []  # mean ablation: every KL rise < alpha
    c = check_run(out, ablation="zero", **common)
    assert 0 < len(c["heads"]) + len(c["mlps"]) < 6
    mean, zero = jsonl(gpt2_ioi / "steps.jsonl"), jsonl(out / "steps.jsonl")
    assert [s["kl"] for s in mean] != [s["kl"] for s in zero]
    assert read_json(gpt2_ioi / "metrics.json")["pruned"]["constants"] > 0  # the means of what was removed
    # same seed: the ablation scheme does not change the prompts
    for s in SIZES:
        assert (gpt2_ioi / "splits" / f"{s}.jsonl").read_bytes() == (out / "splits" / f"{s}.jsonl").read_bytes()


def test_fast_and_reference_engines_agree_byte_for_byte(llama_ioi, model_dirs, tmp_path):
    out = tmp_path / "reference"
    run_ok(extract_argv(model_dirs["llama"], out, alpha=MAIN_ALPHA, engine="reference"))
    check_run(out, task="ioi", model_dir=model_dirs["llama"], arch="llama", alpha=MAIN_ALPHA, ablation="mean",
              engine="reference")
    assert (out / "circuit.json").read_bytes() == (llama_ioi / "circuit.json").read_bytes()
    fast, ref = jsonl(llama_ioi / "steps.jsonl"), jsonl(out / "steps.jsonl")
    assert [s["removed"] for s in fast] == [s["removed"] for s in ref]
    assert [s["kl"] for s in fast] == pytest.approx([s["kl"] for s in ref], rel=1e-4, abs=1e-6)


def test_same_seed_same_circuit(llama_ioi, model_dirs, tmp_path):
    out = tmp_path / "again"
    run_ok(extract_argv(model_dirs["llama"], out, alpha=MAIN_ALPHA))
    assert (out / "circuit.json").read_bytes() == (llama_ioi / "circuit.json").read_bytes()
    for s in SIZES:
        assert (out / "splits" / f"{s}.jsonl").read_bytes() == (llama_ioi / "splits" / f"{s}.jsonl").read_bytes()
    assert (out / "steps.jsonl").read_bytes() == (llama_ioi / "steps.jsonl").read_bytes()


def test_different_seed_different_splits(gpt2_ioi, model_dirs, tmp_path):
    out = tmp_path / "seed1"
    run_ok(extract_argv(model_dirs["gpt2"], out, alpha=GPT2_IOI_ALPHA, seed=1))
    check_run(out, task="ioi", model_dir=model_dirs["gpt2"], arch="gpt2", alpha=GPT2_IOI_ALPHA, ablation="mean",
              seed=1)
    for s in SIZES:
        assert (out / "splits" / f"{s}.jsonl").read_bytes() != (gpt2_ioi / "splits" / f"{s}.jsonl").read_bytes()
    assert read_json(out / "circuit.json")["seed"] == 1


def test_no_include_mlps_keeps_every_mlp(model_dirs, tmp_path):
    out = tmp_path / "heads-only"
    # an alpha this large removes every candidate it is offered
    run_ok(extract_argv(model_dirs["gpt2"], out, alpha="1e9", extra=("--no-include-mlps",)))
    c = check_run(out, task="ioi", model_dir=model_dirs["gpt2"], arch="gpt2", alpha="1e9", ablation="mean",
                  include_mlps=False)
    assert c["heads"] == [] and c["mlps"] == [0, 1] and c["include_mlps"] is False
    assert len(jsonl(out / "steps.jsonl")) == 4  # the 4 heads only


def test_overwrite_replaces_and_flag_forms_parse(model_dirs, tmp_path, capfd):
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("old results")
    # bare --include-mlps / --overwrite flags (the last argv entry too); --include-mlps overrides the earlier
    # --no-include-mlps, so the huge alpha removes the MLPs as well
    argv = extract_argv(model_dirs["gpt2"], out, alpha="1e9", ablation="zero",
                        extra=("--no-include-mlps", "--include-mlps", "--overwrite"))
    assert main(argv) == 0
    assert not (out / "stale.txt").exists()
    c = check_run(out, task="ioi", model_dir=model_dirs["gpt2"], arch="gpt2", alpha="1e9", ablation="zero")
    assert c["heads"] == [] and c["mlps"] == [] and c["include_mlps"] is True
    assert read_json(out / "config.json")["args"]["overwrite"] is True
    # no weights left but ln_f (weight + bias, d_model 16 each) plus folded constants
    pruned = read_json(out / "metrics.json")["pruned"]
    assert pruned["weights"] == 32 and pruned["non_embedding"] == 32 + pruned["constants"]
    assert not [p for p in tmp_path.iterdir() if p.name != "run"], "stray files beside the run directory"
    assert "Traceback" not in capfd.readouterr().err


# ---- evaluate ------------------------------------------------------------------------------------------

def test_evaluate_reproduces_pruned_accuracy(digit_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "gt"
    n_test = 12
    argv = extract_argv(digit_gpt2_dir, out, "greater-than", alpha="1e9")
    argv[argv.index("--n-test") + 1] = str(n_test)
    run_ok(argv)
    m = read_json(out / "metrics.json")
    targets = [r["target"] for r in jsonl(out / "splits" / "test.jsonl")]
    oracle = sum(yy < int(DIGIT * 2) for yy in targets) / n_test
    held = sum(r["target"] < int(DIGIT * 2) for r in jsonl(out / "splits" / "test-heldout.jsonl")) / n_test
    assert 0 < oracle < 1  # the test split decides the number
    assert m["full"]["test_accuracy"] == m["pruned"]["test_accuracy"] == pytest.approx(oracle)
    assert m["full"]["heldout_accuracy"] == m["pruned"]["heldout_accuracy"] == pytest.approx(held)
    before = tree(out)
    capsys.readouterr()

    assert main(["evaluate", "--run", str(out), "--device", "cpu"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"standalone model accuracy {oracle:.1%} on {n_test} test prompts (training templates), {held:.1%} on " \
           f"{n_test} held-out-template prompts" in printed
    assert tree(out) == before  # evaluate only reads

    # it scores the run's own test split: with every start year at 99 nothing is later
    rows = jsonl(out / "splits" / "test.jsonl")
    (out / "splits" / "test.jsonl").write_text("".join(json.dumps({**r, "target": 99}) + "\n" for r in rows))
    assert main(["evaluate", "--run", str(out), "--device", "cpu"]) == 0
    assert "standalone model accuracy 0.0% on 12 test prompts" in " ".join(capsys.readouterr().out.split())


# ---- bad input: exit 2, one `error:` line, nothing created or overwritten -----------------------------

def expect_user_error(argv: list[str], root: Path, capfd) -> str:
    before = tree(root)
    capfd.readouterr()
    rc = main(argv)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert tree(root) == before, "a failed command created or changed files"
    return lines[0]


@pytest.mark.parametrize("change,expect", [
    ({"--task": "nope"}, "unknown task 'nope'"),
    ({"--alpha": "-1"}, "--alpha"),
    ({"--alpha": "nan"}, "--alpha must be a finite number >= 0, got nan"),
    ({"--alpha": "-inf"}, "--alpha must be a finite number >= 0, got -inf"),
    ({"--alpha": "inf"}, "--alpha must be a finite number >= 0, got inf"),
    ({"--ablation": "resample"}, "--ablation 'resample'"),
    ({"--engine": "warp"}, "--engine 'warp'"),
    ({"--n-test": "100000000"}, "can make only"),  # beyond the task's pool: fails after the model is loaded
    ({"--fit-steps": "-1"}, "--fit-steps must be >= 0"),
    ({"--fit-lr": "0"}, "--fit-lr must be a finite number > 0, got 0.0"),
    ({"--fit-batch-size": "0"}, "--fit-batch-size must be >= 1"),
    ({"--fit-jitter": "-1"}, "--fit-jitter must be >= 0"),
], ids=["task", "alpha-negative", "alpha-nan", "alpha-minus-inf", "alpha-inf", "ablation", "engine", "n-beyond-pool",
        "fit-steps", "fit-lr", "fit-batch-size", "fit-jitter"])
def test_extract_rejects_bad_input(change, expect, model_dirs, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # a default runs/ directory would show up here
    argv = extract_argv(model_dirs["gpt2"], tmp_path / "out", alpha="0.1")
    for flag, value in change.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert expect in expect_user_error(argv, tmp_path, capfd)


@pytest.mark.parametrize("hub_id", ["gpt2", "circuit-bench-tests/no-such-model"])
def test_extract_unknown_model_offline(hub_id, tmp_path, monkeypatch, capfd):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        pytest.skip(f"{hub_id} is in the local Hugging Face cache")
    monkeypatch.chdir(tmp_path)  # no local directory named like the hub id
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = extract_argv(Path(hub_id), tmp_path / "out", alpha="0.1")
    line = expect_user_error(argv, tmp_path, capfd)
    assert hub_id in line and "smollm2-135m" in line


def test_extract_missing_model_directory(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    for missing in (str(tmp_path / "no-such-dir"), "./no-such-dir", "~/no-such-dir"):
        argv = extract_argv(tmp_path, tmp_path / "out", alpha="0.1")
        argv[argv.index("--model") + 1] = missing
        assert f"model directory {missing} does not exist" in expect_user_error(argv, tmp_path, capfd)


def test_verbs_print_no_lightning_banner(model_dirs, tmp_path, capfd):
    run_ok(extract_argv(model_dirs["gpt2"], tmp_path / "out", alpha="0.1"))
    printed = "".join(capfd.readouterr())
    assert "GPU available" not in printed and "litlogger" not in printed and "Warning" not in printed


def test_extract_refuses_existing_out(model_dirs, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    line = expect_user_error(extract_argv(model_dirs["gpt2"], out, alpha="0.1"), tmp_path, capfd)
    assert "--overwrite" in line
    assert (out / "keep.txt").read_text() == "precious" and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_evaluate_corrupt_manifest(llama_ioi, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(llama_ioi, run)
    (run / "pruned" / "manifest.json").write_text('{"format": "circuit-bench/pruned-v1", "config": ')
    line = expect_user_error(["evaluate", "--run", str(run), "--device", "cpu"], tmp_path, capfd)
    assert "manifest.json" in line


def test_evaluate_missing_run(tmp_path, capfd):
    line = expect_user_error(["evaluate", "--run", str(tmp_path / "nope")], tmp_path, capfd)
    assert str(tmp_path / "nope") in line


def test_no_verb(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    line = expect_user_error([], tmp_path, capfd)
    assert "extract" in line and "evaluate" in line


def test_default_directories_differ_by_every_option_that_changes_the_result():
    base = ExtractArgs(task="ioi")
    names = {ExtractArgs(task="ioi", **change).out_dir for change in (
        {}, {"include_mlps": False}, {"n_val": 41}, {"n_patching": 41}, {"n_test": 101}, {"dtype": "bfloat16"},
        {"device": "cpu"}, {"engine": "reference"}, {"alpha": 0.02}, {"ablation": "mean"}, {"seed": 1},
        {"fit_jitter": 0}, {"fit_every_length": True})}
    assert len(names) == 13 and all(n.parent.name == "runs" for n in names)
    assert base.out_dir == ExtractArgs(task="ioi", overwrite=True).out_dir  # --overwrite changes nothing computed
    assert base.out_dir.name.startswith("extract-ioi-smollm2-135m-alpha0.14-mean-pooled-s0-")
    assert ExtractArgs(task="ioi", include_mlps=False).out_dir.name.startswith("extract-ioi-smollm2-135m-alpha0.14-"
                                                                               "mean-pooled-heads-s0-")


def test_alpha_defaults_to_the_tasks_own():
    from tasks import TASKS

    for name, task in TASKS.items():
        args = ExtractArgs(task=name)
        assert args.alpha == task.alpha and f"-alpha{task.alpha:g}-" in args.out_dir.name
        assert ExtractArgs(task=name, alpha=0.02).alpha == 0.02  # --alpha still wins
    assert len({t.alpha for t in TASKS.values()}) > 1  # the tasks' defaults differ, so this test can tell


def test_a_killed_runs_partial_directory_is_cleared(model_dirs, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".run.partial-{int(gone.stdout)}"  # that process has exited
    (stale / "tb").mkdir(parents=True)
    live = tmp_path / f".run.partial-{os.getpid()}-x"  # not a pid suffix: left alone
    live.mkdir()
    run_ok(extract_argv(model_dirs["gpt2"], out, alpha="0.1"))
    assert not stale.exists() and live.exists() and (out / "circuit.json").is_file()


# ---- batches: the same circuit at any batch size, bounded memory, honest progress -------------------------

def test_extract_gives_the_same_circuit_at_two_batch_sizes(llama_ioi, model_dirs, tmp_path):
    out = tmp_path / "b1"
    run_ok(extract_argv(model_dirs["llama"], out, alpha="0.1", extra=("--batch-size", "1", "--cache-gb", "0")))
    assert json.loads((out / "circuit.json").read_text()) == json.loads((llama_ioi / "circuit.json").read_text())
    mine, theirs = jsonl(out / "steps.jsonl"), jsonl(llama_ioi / "steps.jsonl")
    assert [s["removed"] for s in mine] == [s["removed"] for s in theirs]
    assert [s["kl"] for s in mine] == pytest.approx([s["kl"] for s in theirs], rel=1e-6, abs=1e-9)
    assert json.loads((out / "config.json").read_text())["args"]["batch_size"] == 1


def test_a_batch_that_cannot_fit_is_refused_up_front(model_dirs, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 1024 ** 2)  # a 10 MB machine
    argv = extract_argv(model_dirs["llama"], tmp_path / "out", alpha="0.1",
                        extra=("--n-val", "4000", "--batch-size", "4000"))
    line = expect_user_error(argv, tmp_path, capfd)
    assert "--batch-size 4000 needs about" in line and "lower --batch-size" in line


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--cache-gb", "-1"), ("--cache-gb", "nan")])
def test_bad_batch_options(flag, value, model_dirs, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    argv = extract_argv(model_dirs["llama"], tmp_path / "out", alpha="0.1", extra=(flag, value))
    assert flag in expect_user_error(argv, tmp_path, capfd)


def test_progress_shows_integers_and_the_kept_state(llama_ioi, capfd, model_dirs, tmp_path):
    capfd.readouterr()
    assert main(extract_argv(model_dirs["llama"], tmp_path / "p", alpha="0.1")) == 0
    out = capfd.readouterr().out
    steps = jsonl(tmp_path / "p" / "steps.jsonl")
    removed = sum(s["removed"] for s in steps)
    lines = [line for line in out.splitlines() if line.startswith("candidate ")]  # not a terminal: a line each
    assert [line.split(":")[0] for line in lines] == [f"candidate {i + 1}/{len(steps)} {s['component']}"
                                                      for i, s in enumerate(steps)]
    assert f"kept state: KL {m_kl(tmp_path / 'p'):.4f} · removed {removed} of {len(steps)} decided" in lines[-1]
    assert ".000" not in lines[-1].split("kept state")[1]


def m_kl(run: Path) -> float:
    return read_json(run / "metrics.json")["search"]["val_kl"]


@pytest.mark.parametrize("where", ["search", "fit"])
def test_ctrl_c_in_the_search_or_the_fit_says_so_and_publishes_nothing(where, model_dirs, tmp_path, monkeypatch,
                                                                        capfd):
    from bench.core.extraction import ExtractionModule
    from bench.core.fitting import ConstantsFit

    def interrupt(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(ExtractionModule if where == "search" else ConstantsFit, "training_step", interrupt)
    capfd.readouterr()
    assert main(extract_argv(model_dirs["llama"], tmp_path / "out", alpha="0.1")) == 130
    assert capfd.readouterr().err.strip().splitlines() == ["error: interrupted; nothing was published"]
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("verb", ["extract", "distill", "sweep", "compare", "evaluate"])
def test_help_is_spelled_as_the_readme_spells_it(verb, capsys):
    with pytest.raises(SystemExit) as done:
        main([verb, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    flags = set(re.findall(r"--[\w-]+", text))
    assert flags and not [f for f in flags if "_" in f], flags
    assert "{true,false}" not in text
    if verb == "extract":
        assert {"--n-val", "--batch-size", "--cache-gb", "--include-mlps", "--no-include-mlps"} <= flags
        assert "--include-mlps/--no-include-mlps" in text and "--overwrite/--no-overwrite" in text
        readme = (Path(__file__).parents[1] / "README.md").read_text()
        assert "--no-include-mlps" in readme and "--n-val" in readme


def test_a_search_on_every_length_holds_each_length_and_one_circuit(model_dirs, tmp_path, capsys):
    """--search-every-length: patching and validation prompts of every training length, the test prompts of one;
    both engines and every batch size give the same circuit; per-position means refuse it in one line."""
    runs = {}
    for name, engine, batch in (("fast", "fast", "64"), ("ref", "reference", "64"), ("small", "fast", "3")):
        runs[name] = tmp_path / name
        run_ok(extract_argv(model_dirs["llama"], runs[name], alpha=MAIN_ALPHA, ablation="mean-pooled", engine=engine,
                            extra=("--search-every-length", "--batch-size", batch, "--fit-steps", "0")))
    splits = {s: [json.loads(line) for line in (runs["fast"] / "splits" / f"{s}.jsonl").read_text().splitlines()]
              for s in ("patching", "val", "test")}
    lengths = {s: {len(r["input_ids"]) for r in rows} for s, rows in splits.items()}
    assert len(lengths["val"]) > 1 and len(lengths["patching"]) > 1 and len(lengths["test"]) == 1
    assert not {r["prompt"] for r in splits["test"]} & {r["prompt"] for r in splits["val"] + splits["patching"]}
    circuit = (runs["fast"] / "circuit.json").read_bytes()
    assert all((runs[n] / "circuit.json").read_bytes() == circuit for n in ("ref", "small"))
    fast, ref = jsonl(runs["fast"] / "steps.jsonl"), jsonl(runs["ref"] / "steps.jsonl")
    assert [s["kl"] for s in fast] == pytest.approx([s["kl"] for s in ref], rel=1e-4, abs=1e-6)
    run_ok(["distill", "--task", "ioi", "--match", str(runs["fast"]), "--steps", "2", "--batch-size", "4",
            "--out", str(tmp_path / "student")])  # a student validates on the run's splits of every length
    capsys.readouterr()
    assert main(extract_argv(model_dirs["llama"], tmp_path / "mean", alpha=MAIN_ALPHA, ablation="mean",
                             extra=("--search-every-length",))) == 2
    assert "--search-every-length needs a position-free --ablation" in capsys.readouterr().err


def test_the_per_template_rule_gives_one_circuit_from_each_engine_and_batch(model_dirs, tmp_path):
    """--search-rule template (with --search-every-length too): both engines and a small batch give the same
    circuit and KLs; each step logs the template that rose most."""
    runs = {}
    for name, engine, batch in (("fast", "fast", "64"), ("ref", "reference", "64"), ("small", "fast", "3")):
        runs[name] = tmp_path / name
        run_ok(extract_argv(model_dirs["llama"], runs[name], alpha=MAIN_ALPHA, ablation="mean-pooled", engine=engine,
                            extra=("--search-rule", "template", "--search-every-length", "--batch-size", batch,
                                   "--fit-steps", "0")))
    circuit = (runs["fast"] / "circuit.json").read_bytes()
    assert all((runs[n] / "circuit.json").read_bytes() == circuit for n in ("ref", "small"))
    fast, ref = jsonl(runs["fast"] / "steps.jsonl"), jsonl(runs["ref"] / "steps.jsonl")
    assert [s["delta"] for s in fast] == pytest.approx([s["delta"] for s in ref], rel=1e-4, abs=1e-6)
    assert all(s["worst_template"] for s in fast)


def test_extract_scores_the_off_template_phrasings_and_names_the_worst(llama_ioi, tmp_path):
    """A position-free run scores each off-template phrasing; a per-position one cannot take their lengths."""
    from tasks import get_task

    pooled = tmp_path / "pooled"
    run_ok(extract_argv(tiny_llama_dir_of(llama_ioi), pooled, alpha=MAIN_ALPHA, ablation="mean-pooled",
                        extra=("--fit-steps", "0")))
    m = read_json(pooled / "metrics.json")
    names = {t.name for t in get_task("ioi").off_template}
    assert set(m["pruned"]["offtemplate_by_template"]) == names == set(m["full"]["offtemplate_by_template"])
    assert m["pruned"]["offtemplate_worst"]["template"] in names
    assert "offtemplate_accuracy" not in read_json(llama_ioi / "metrics.json")["pruned"]  # ablation mean


def tiny_llama_dir_of(run: Path) -> Path:
    return Path(read_json(run / "config.json")["args"]["model"])
