"""Circuit recovery: hand-computed TPR/FPR/AUC, the published circuits as data, and Algorithm 1 recovering a
PLANTED circuit: every head outside the planted set has its W_O slice zeroed, so ablating it changes nothing
(ΔKL = 0 up to float noise) while every planted head matters."""
from __future__ import annotations

import json
import math

import pytest
import torch

from models import published
from models.ablation import collect_means
from models.arch import blocks, out_proj
from models.fast import FastScorer
from models.published import PUBLISHED, PublishedCircuit, for_model, is_gpt2_small
from models.roc import roc_auc, tpr_fpr
from models.search import Search
from models.types import BenchError, Component, candidate_order
from tests.tiny import tiny_gpt2, tiny_ids, tiny_llama


pytestmark = pytest.mark.usefixtures("one_thread")

# ---- hand-computed cases -----------------------------------------------------------------------------------


def test_tpr_fpr_by_hand():
    truth = [(0, 0), (1, 1)]  # a 2x2 model: 2 positives, 2 negatives
    assert tpr_fpr([(0, 0), (0, 1)], truth, 2, 2) == (0.5, 0.5)
    assert tpr_fpr([], truth, 2, 2) == (0.0, 0.0)
    assert tpr_fpr([(l, h) for l in range(2) for h in range(2)], truth, 2, 2) == (1.0, 1.0)
    assert tpr_fpr([[1, 1], [0, 0]], truth, 2, 2) == (1.0, 0.0)  # JSON-style lists, any order
    # GPT-2 small shape: 26 IOI heads, 118 others; keep 13 of them and 59 others
    ioi = sorted(published.published("ioi").heads)
    others = [(l, h) for l in range(12) for h in range(12) if (l, h) not in set(ioi)]
    assert tpr_fpr(ioi[:13] + others[:59], ioi, 12, 12) == (0.5, 0.5)


@pytest.mark.parametrize("kept,truth", [
    ([(2, 0)], [(0, 0)]),  # a kept head outside the model
    ([], [(0, 5)]),  # a published head outside the model
    ([], []),  # no positives
    ([], [(0, 0), (0, 1), (1, 0), (1, 1)]),  # no negatives
])
def test_tpr_fpr_rejects(kept, truth):
    with pytest.raises(BenchError):
        tpr_fpr(kept, truth, 2, 2)


@pytest.mark.parametrize("points,auc", [
    ([], 0.5),  # only (0,0) and (1,1): the chance diagonal
    ([(0.0, 1.0)], 1.0),  # perfect recovery
    ([(0.0, 0.0), (0.0, 0.5), (0.0, 1.0)], 1.0),  # a sweep that never keeps a wrong head
    ([(0.5, 0.5)], 0.5),
    ([(0.25, 0.75)], 0.25 * 0.75 / 2 + 0.75 * (0.75 + 1) / 2),  # 0.75
    ([(0.5, 0.0)], 0.25),
    ([(0.5, 0.8), (0.1, 0.4)], 0.1 * 0.4 / 2 + 0.4 * 1.2 / 2 + 0.5 * 1.8 / 2),  # unsorted: 0.71
    ([(1.0, 0.0)], 0.0),  # a vertical jump at FPR 1 adds no area
])
def test_roc_auc_by_hand(points, auc):
    assert roc_auc(points) == pytest.approx(auc, abs=1e-12)


@pytest.mark.parametrize("bad", [[(1.5, 0.2)], [(0.2, -0.1)], [(math.nan, 0.5)]])
def test_roc_auc_rejects(bad):
    with pytest.raises(BenchError):
        roc_auc(bad)


# ---- the published circuits --------------------------------------------------------------------------------

# the union of each paper's heads, as recorded in models/published.py (see its comments for the sources)
EXPECTED = {
    "ioi": {(0, 1), (0, 10), (2, 2), (3, 0), (4, 11), (5, 5), (5, 8), (5, 9), (6, 9), (7, 3), (7, 9), (8, 6),
            (8, 10), (9, 0), (9, 6), (9, 7), (9, 9), (10, 0), (10, 1), (10, 2), (10, 6), (10, 7), (10, 10), (11, 2),
            (11, 9), (11, 10)},
    "greater-than": {(5, 1), (5, 5), (6, 1), (6, 9), (7, 10), (8, 8), (8, 11), (9, 1)},
    "acronyms": {(1, 0), (2, 2), (4, 11), (5, 8), (8, 11), (9, 9), (10, 10), (11, 4)},
}
assert [len(EXPECTED[t]) for t in ("ioi", "greater-than", "acronyms")] == [26, 8, 8]


@pytest.mark.parametrize("task,mlps", [("ioi", ()), ("greater-than", (8, 9, 10, 11)), ("acronyms", ())])
def test_published_circuits(task, mlps):
    c = published.published(task)
    assert c.heads == EXPECTED[task] and c.mlps == mlps
    assert len(c.heads) == sum(len(hs) for hs in PUBLISHED[task]["roles"].values())  # no head in two roles
    assert c.citation and json.loads(json.dumps(c.to_dict()))["n_heads"] == len(EXPECTED[task])
    with pytest.raises(BenchError):
        published.published("nope")


def test_only_gpt2_small_is_scored():
    from transformers import GPT2Config, LlamaConfig

    assert is_gpt2_small(GPT2Config()) and for_model(GPT2Config(), "ioi").heads == published.published("ioi").heads
    assert not is_gpt2_small(GPT2Config(n_layer=2, n_head=2)) and for_model(GPT2Config(n_layer=2), "ioi") is None
    assert not is_gpt2_small(LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12))
    assert not is_gpt2_small(GPT2Config(n_layer=24, n_head=16))  # gpt2-medium: not the model of the papers


# ---- a planted circuit ---------------------------------------------------------------------------------------

def plant(model, keep: set[tuple[int, int]]):
    """Zero the W_O slice of every head not in `keep`: such a head writes nothing to the residual stream."""
    c = model.config
    n_heads = c.n_head if c.model_type == "gpt2" else c.num_attention_heads
    hd = out_proj(model, blocks(model)[0]).weight.shape[0 if c.model_type == "gpt2" else 1] // n_heads
    with torch.no_grad():
        for l, block in enumerate(blocks(model)):
            w = out_proj(model, block).weight  # gpt2 Conv1D: (nh*hd, d), rows are heads; llama Linear: (d, nh*hd)
            for h in range(n_heads):
                if (l, h) not in keep:
                    (w[h * hd:(h + 1) * hd] if c.model_type == "gpt2" else w[:, h * hd:(h + 1) * hd]).zero_()
    return model


PLANTED = {"gpt2": {(0, 1), (1, 3), (2, 0), (2, 2)}, "llama": {(0, 4), (1, 1), (2, 3)}}
ALPHAS = (1e-5, 1e-3, 0.02, 0.1, 1e9)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("scheme", ["zero", "mean"])
def test_algorithm1_recovers_a_planted_circuit(arch, scheme):
    model = plant(tiny_gpt2(seed=1, n_layer=3, n_head=4) if arch == "gpt2" else tiny_llama(seed=1), PLANTED[arch])
    n_layers, n_heads = 3, model.config.num_attention_heads
    truth = PLANTED[arch]
    means = collect_means(model, tiny_ids(n=8, t=10, seed=1), scheme)
    scorer = FastScorer(model, tiny_ids(n=8, t=10, seed=2), means)  # one scorer: a pure function of `removed`
    kept_sets = []
    for alpha in ALPHAS:
        search = Search(scorer, candidate_order(n_layers, n_heads, include_mlps=False), alpha)
        removed = search.run()
        kept_sets.append([(l, h) for l in range(n_layers) for h in range(n_heads) if Component(l, h) not in removed])
        for st in search.steps:  # a dead head changes nothing; a planted one matters
            dead = (st.component.layer, st.component.head) not in truth
            assert abs(st.delta) < 1e-6 if dead else st.delta > 1e-3, (alpha, str(st.component), st.delta)
    points = [tpr_fpr(kept, truth, n_layers, n_heads)[::-1] for kept in kept_sets]  # (FPR, TPR)
    assert all(fpr == 0.0 for fpr, _ in points), kept_sets  # every dead head is removed at every alpha > 0
    assert points[0] == (0.0, 1.0)  # a small alpha keeps exactly the planted heads
    assert points[-1] == (0.0, 0.0)  # a huge alpha removes everything
    assert [t for _, t in points] == sorted((t for _, t in points), reverse=True)
    assert any(0 < t < 1 for _, t in points)  # some alpha keeps only part of it: the sweep traces a curve
    assert roc_auc(points) == 1.0
    # scored against the wrong heads (every head but the planted ones), the same sweep is worse than chance
    wrong = {(l, h) for l in range(n_layers) for h in range(n_heads)} - truth
    assert roc_auc([tpr_fpr(kept, wrong, n_layers, n_heads)[::-1] for kept in kept_sets]) < 0.5


def test_sweep_reports_roc_for_a_planted_circuit(planted_dir, tmp_path, monkeypatch):
    """End to end through `sweep`: published.for_model is pointed at the planted heads (it only knows GPT-2
    small), so sweep.json, sweep.csv and roc.png carry the recovery of the planted circuit."""
    from matplotlib.image import imread

    from rich.console import Console

    from bench.verbs.sweep import COLUMNS, ROC_COLUMNS, SweepArgs, print_sweep, sweep

    truth = PublishedCircuit("ioi", "planted in this test", frozenset(PLANTED_DIR), {"planted": sorted(PLANTED_DIR)},
                             ())
    monkeypatch.setattr(published, "for_model", lambda config, task: truth)
    out = sweep(SweepArgs(task="ioi", alphas=[1e9, 1e-4], model=str(planted_dir), ablation="zero",
                          include_mlps=False, n_patching=4, n_val=4, n_test=6, out=str(tmp_path / "s"),
                          device="cpu"))
    r = json.loads((out / "sweep.json").read_text())
    assert [row["alpha"] for row in r["rows"]] == [1e-4, 1e9]
    assert [(row["tpr"], row["fpr"]) for row in r["rows"]] == [(1.0, 0.0), (0.0, 0.0)]
    assert [row["kept_heads"] for row in r["rows"]] == [len(PLANTED_DIR), 0]
    assert r["roc"]["points"] == [[0.0, 1.0], [0.0, 0.0]] and r["roc"]["auc"] == 1.0
    assert r["published"]["heads"] == [list(h) for h in sorted(PLANTED_DIR)]
    header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header == list(COLUMNS + ROC_COLUMNS)
    assert "roc.png" in r["plots"] and imread(out / "roc.png").shape[2] in (3, 4)
    console = Console(record=True, width=160)
    print_sweep(out, console)
    assert "ROC AUC 1.000 against the 3 heads of planted in this test" in console.export_text()


PLANTED_DIR = {(0, 2), (1, 0), (1, 3)}  # a 2-layer, 4-head GPT-2 with the real tokenizer


@pytest.fixture(scope="module")
def planted_dir(smollm2_tokenizer, tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(smollm2_tokenizer), n_layer=2, n_head=4, n_embd=32, n_positions=64,
                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     initializer_range=0.2)
    model = plant(GPT2LMHeadModel(cfg).eval(), PLANTED_DIR)
    directory = tmp_path_factory.mktemp("planted-gpt2")
    model.save_pretrained(str(directory))
    smollm2_tokenizer.save_pretrained(str(directory))
    return directory
