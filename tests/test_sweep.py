"""`bench sweep` on a tiny random GPT-2 saved with the real SmolLM2 tokenizer (as tests/test_cli.py does): the
files it writes, sizes that shrink as alpha grows, valid plots, and bad input failing before any work."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from functools import partial

from bench.cli import gather_list
from bench.verbs.sweep import COLUMNS, SweepArgs, alpha_dir, print_sweep, sweep
from models.types import BenchError, Circuit

SMALL = dict(n_patching=4, n_val=4, n_test=6, fit_steps=5)
# seed 0, zero ablation, this tiny model: 0.001 keeps all 6 components, 0.015 keeps 2 heads + 2 MLPs, 0.1 keeps
# one MLP; every decision is >= 0.0015 away from its alpha
ALPHAS = [0.1, 0.001, 0.015]  # given unsorted on purpose
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2_dir(smollm2_tokenizer, tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(smollm2_tokenizer), n_layer=2, n_head=2, n_embd=16, n_positions=64,
                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     initializer_range=0.2)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # HF inits biases and norms to constants; perturb them so every weight matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(str(directory))
    smollm2_tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def swept(gpt2_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweeps") / "ioi"
    args = SweepArgs(task="ioi", alphas=ALPHAS, model=str(gpt2_dir), ablation="zero", out=str(out), device="cpu",
                     **SMALL)
    assert sweep(args) == out
    return out


def hf_non_embedding(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return sum(p.numel() for n, p in model.named_parameters() if not any(k in n for k in ("wte", "wpe", "lm_head")))


def test_sweep_files(swept, gpt2_dir):
    assert sorted(p.name for p in swept.iterdir()) == sorted(
        ["sweep.csv", "sweep.json", "config.json", "size_vs_alpha.png", "accuracy_vs_size.png",
         *(alpha_dir(a) for a in ALPHAS)])
    assert not list(swept.parent.glob(f".{swept.name}.partial-*"))
    with open(swept / "sweep.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS  # no tpr/fpr: this is not GPT-2 small
        rows = list(reader)
    r = json.loads((swept / "sweep.json").read_text())
    assert [float(row["alpha"]) for row in rows] == [row["alpha"] for row in r["rows"]] == sorted(ALPHAS)
    assert r["roc"] is None and r["published"] is None and r["plots"] == ["size_vs_alpha.png", "accuracy_vs_size.png"]
    full = r["full"]
    assert full["non_embedding_params"] == hf_non_embedding(gpt2_dir)
    assert (full["kept_heads"], full["kept_mlps"]) == (4, 2)
    for row, csv_row in zip(r["rows"], rows):
        assert {k: float(v) for k, v in csv_row.items()} == pytest.approx({k: float(row[k]) for k in COLUMNS})
        c = Circuit.load(swept / alpha_dir(row["alpha"]) / "circuit.json")
        assert (c.alpha, c.ablation, c.task, c.model, c.seed) == (row["alpha"], "zero", "ioi", str(gpt2_dir), 0)
        assert (len(c.heads), len(c.mlps)) == (row["kept_heads"], row["kept_mlps"])
        assert row["pct_of_full"] == pytest.approx(100 * row["non_embedding_params"] / full["non_embedding_params"])
        for acc in (row["test_accuracy"], full["test_accuracy"]):
            assert 0 <= acc <= 1 and (acc * SMALL["n_test"]).is_integer()
        assert math.isfinite(row["test_kl_to_full"]) and row["test_kl_to_full"] >= -1e-9
        assert 0 < row["search_wall_s"] < 120 and row["forwards"] == 1 + 6  # the empty set + one per candidate
        assert list((swept / alpha_dir(row["alpha"]) / "tb").glob("events.out.tfevents.*"))
    cfg = json.loads((swept / "config.json").read_text())
    assert cfg["command"] == "sweep" and set(cfg["args"]) == {f.name for f in dataclasses.fields(SweepArgs)}
    assert cfg["args"]["alphas"] == sorted(ALPHAS) and cfg["args"]["ablation"] == "zero"


def test_size_shrinks_as_alpha_grows(swept):
    rows = json.loads((swept / "sweep.json").read_text())["rows"]
    full = json.loads((swept / "sweep.json").read_text())["full"]["non_embedding_params"]
    sizes = [r["non_embedding_params"] for r in rows]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # strictly, for these alphas
    assert sizes[0] == full and sizes[-1] < full
    assert [(r["kept_heads"], r["kept_mlps"]) for r in rows] == [(4, 2), (2, 2), (0, 1)]
    kls = [r["test_kl_to_full"] for r in rows]
    assert kls == sorted(kls) and kls[0] == pytest.approx(0, abs=1e-9)  # the full circuit is the full model


def test_plots_are_valid_pngs(swept):
    from matplotlib.image import imread

    for name in ("size_vs_alpha.png", "accuracy_vs_size.png"):
        assert (swept / name).read_bytes()[:8] == PNG, name
        h, w, channels = imread(swept / name).shape
        assert h > 200 and w > 300 and channels in (3, 4)


def test_each_alpha_runs_from_scratch(swept, gpt2_dir):
    """Each alpha's circuit is what Algorithm 1 alone gives at that alpha, here with the reference engine (one
    hooked forward of the HF model per candidate) on the same prompts and means."""
    from bench.verbs.sweep import load
    from models.search import HookScorer, Search
    from models.types import candidate_order

    ctx = load(SweepArgs(task="ioi", alphas=ALPHAS, model=str(gpt2_dir), ablation="zero", device="cpu", **SMALL))
    scorer = HookScorer(ctx.model, ctx.dm.val.input_ids, ctx.means)
    for alpha in ALPHAS:
        removed = Search(scorer, candidate_order(2, 2, include_mlps=True), alpha).run()
        assert Circuit.load(swept / alpha_dir(alpha) / "circuit.json").removed() == set(removed), alpha


def test_print_sweep(swept):
    console = Console(record=True, width=160)
    print_sweep(swept, console)
    text = console.export_text()
    assert "0.015" in text and "full" in text and "(100%)" in text and "ROC" not in text


# ---- bad input: BenchError before anything is loaded or written --------------------------------------------

@pytest.mark.parametrize("change,expect", [
    ({"alphas": []}, "--alphas is empty"),
    ({"alphas": [0.1, -1.0]}, "finite number >= 0"),
    ({"alphas": [float("nan")]}, "finite number >= 0"),
    ({"alphas": [float("inf")]}, "finite number >= 0"),
    ({"alphas": [0.1, 0.1]}, "repeats"),
    ({"alphas": "0.1"}, "list of numbers"),
    ({"alphas": ["x"]}, "must be numbers"),
    ({"task": "nope"}, "unknown task"),
    ({"ablation": "resample"}, "--ablation"),
    ({"n_val": 0}, "--n-val"),
    ({"dtype": "int8"}, "dtype"),
])
def test_sweep_args_reject(change, expect, tmp_path):
    kw = dict(task="ioi", alphas=[0.1], out=str(tmp_path / "out"), **SMALL) | change
    with pytest.raises(BenchError, match=expect):
        SweepArgs(**kw)
    assert not (tmp_path / "out").exists()


def test_sweep_refuses_existing_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(BenchError, match="--overwrite"):
        sweep(SweepArgs(task="ioi", alphas=[0.1], model=str(tmp_path / "no-such-model"), out=str(out), **SMALL))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# ---- the command line: `--alphas A1 A2 ...` ----------------------------------------------------------------
gather_alphas = partial(gather_list, name="alphas")


def parse(argv: list[str]) -> SweepArgs:
    """What bench.cli does for a verb: a jsonargparse parser of the args dataclass, then the dataclass."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False)
    p.add_class_arguments(SweepArgs)
    ns = p.parse_args(gather_alphas(argv))
    return SweepArgs(**{k: v for k, v in vars(ns).items() if k != "__path__"})


def test_gather_alphas():
    assert gather_alphas(["--task", "ioi", "--alphas", "0.1", "1e-3", "--seed", "1"]) == [
        "--task", "ioi", "--alphas=[0.1, 0.001]", "--seed", "1"]
    assert gather_alphas(["--alphas"]) == ["--alphas=[]"]
    assert gather_alphas(["--alphas", "-1", "nan", "inf"]) == ["--alphas=[-1.0, .nan, .inf]"]
    assert gather_alphas(["--alphas=[0.1]"]) == ["--alphas=[0.1]"]  # already a list: left alone
    assert gather_alphas(["--alphas=0.1,0.2", "--alphas"]) == ["--alphas=[0.1, 0.2]", "--alphas=[]"]
    assert parse(["--task", "ioi", "--alphas", "0.1", "0.001"]).alphas == [0.001, 0.1]


@pytest.mark.parametrize("values,expect", [([], "empty"), (["0.1", "-1"], ">= 0"), (["nan"], ">= 0")])
def test_cli_alphas_reject(values, expect):
    with pytest.raises(BenchError, match=expect):
        parse(["--task", "ioi", "--alphas", *values, "--seed", "0"])


def test_bench_sweep_verb(swept, gpt2_dir, tmp_path, capsys):
    """Through `bench sweep`, once bench/cli.py wires the verb (skipped until then)."""
    from bench import cli

    if "sweep" not in cli.VERBS:
        pytest.skip("bench/cli.py does not wire `bench sweep` yet")
    out = tmp_path / "cli"
    argv = ["sweep", "--task", "ioi", "--model", str(gpt2_dir), "--alphas", *map(str, ALPHAS), "--ablation", "zero",
            "--n-patching", "4", "--n-val", "4", "--n-test", "6", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    ours = [{k: v for k, v in r.items() if k != "search_wall_s"}
            for r in json.loads((out / "sweep.json").read_text())["rows"]]
    assert ours == [{k: v for k, v in r.items() if k != "search_wall_s"}
                    for r in json.loads((swept / "sweep.json").read_text())["rows"]]
    assert "0.015" in capsys.readouterr().out
    assert cli.main(["sweep", "--task", "ioi", "--alphas", "--out", str(tmp_path / "bad")]) == 2
