"""bench.tools.offtemplate: pruned models on phrasings in none of the templates, at their own token lengths; and
bench.tools.fit_probe, which refits a run's constants under other fit settings and scores them there too."""
import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.core.pipeline import prepare
from bench.tools.fit_probe import main as fit_probe
from bench.tools.offtemplate import main as offtemplate
from tasks import get_task
from tasks.data import SPLITS, load_splits


@pytest.fixture(scope="module")
def runs(teacher, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("off")
    out = {}
    for scheme in ("mean-pooled", "mean"):
        out[scheme] = root / scheme
        argv = ["extract", "--task", "ioi", "--model", teacher, "--n-patching", "4", "--n-val", "4", "--n-test", "4",
                "--alpha", "0.5", "--fit-steps", "5", "--ablation", scheme, "--device", "cpu",
                "--out", str(out[scheme])]
        assert main(argv) == 0
    return out


def test_position_free_runs_answer_every_length_and_per_position_runs_refuse(runs, tmp_path, smollm2_tokenizer):
    report = tmp_path / "off.md"
    assert offtemplate(["--runs", str(runs["mean-pooled"]), str(runs["mean"]), "--n", "6", "--device", "cpu",
                        "--out", str(report)]) == 0
    rows = [line.split("|")[1:-1] for line in report.read_text().splitlines() if line.startswith("| ")][2:]
    phrasings = [t.name for t in get_task("ioi").off_template]
    assert len(rows) == 2 * len(phrasings) and len(phrasings) >= 8
    lengths = {int(r[3]) for r in rows}
    assert len(lengths) >= 3 and 15 not in lengths  # other lengths than the templates' 15 tokens
    for r in rows:
        scheme, cut = r[1].strip(), r[5].strip()
        assert (cut == "refused (other length)") == (scheme == "mean"), r
        if scheme == "mean-pooled":
            assert cut.endswith(")") and "%" in cut and float(r[6]) >= 0
    saved = json.loads(report.with_suffix(".json").read_text())  # the same rows, for tables over runs
    assert [(Path(s["run"]).name, s["phrasing"], s["tokens"]) for s in saved] == [
        (r[0].strip(), r[2].strip(), int(r[3])) for r in rows]
    assert all(("refused" in s) == (s["ablation"] == "mean") for s in saved)


def test_bad_runs_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        offtemplate(["--runs", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "circuit.json" in err[0]


def test_the_fit_probe_refits_a_runs_circuit_and_reproduces_the_run(runs, tmp_path):
    run, report = runs["mean-pooled"], tmp_path / "probe.md"
    assert fit_probe(["--runs", str(run), "--variants", "steps=5", "steps=0", "steps=3,jitter=0,lr=0.01", "--n", "4",
                      "--device", "cpu", "--out", str(report)]) == 0
    rows = json.loads(report.with_suffix(".json").read_text())
    assert json.loads((run / "metrics.json").read_text())["fit"]["steps"] == 5  # the run removed something
    assert [r["variant"] for r in rows] == ["steps=5", "steps=0", "steps=3,jitter=0,lr=0.01"]
    assert [(r["fit"]["steps"], r["fit"]["jitter"], r["fit"]["lr"]) for r in rows] == [(5, 3, 3e-3), (0, 0, 3e-3),
                                                                                        (3, 0, 0.01)]
    m = json.loads((run / "metrics.json").read_text())["pruned"]
    same = rows[0]  # the run's own fit settings: the same circuit, means, prompts and constants as the run
    assert same["test"] == m["test_accuracy"] and abs(same["test_kl"] - m["test_kl_to_full"]) < 1e-6
    assert abs(same["heldout_kl"] - m["heldout_kl_to_full"]) < 1e-6
    assert rows[1]["test_kl"] != same["test_kl"]
    assert len([line for line in report.read_text().splitlines() if line.startswith("| ioi")]) == 3


def test_the_fit_probe_scores_the_runs_own_saved_prompts(runs, tmp_path, monkeypatch):
    """Not prompts drawn again from today's registry, which may have grown since the run."""
    import bench.core.pipeline  # fit_probe prepares a run through bench.core.pipeline.prepare_run
    run = tmp_path / "run"
    shutil.copytree(runs["mean-pooled"], run)
    test = run / "splits" / "test.jsonl"
    test.write_text("".join(test.read_text().splitlines(keepends=True)[1:]))  # one saved prompt fewer
    seen = []

    def spy(args, splits=None):
        seen.append(prepare(args, splits))
        return seen[-1]
    monkeypatch.setattr(bench.core.pipeline, "prepare", spy)
    assert fit_probe(["--runs", str(run), "--variants", "steps=0", "--n", "2", "--device", "cpu"]) == 0
    saved = load_splits(run / "splits")
    assert [seen[0].dm.split(s).examples for s in SPLITS] == [saved[s].examples for s in SPLITS]
    assert len(saved["test"]) == 3 and seen[0].dm.batch_size is not None


def test_a_bad_fit_probe_variant_is_one_line(runs, capsys):
    with pytest.raises(SystemExit) as e:
        fit_probe(["--runs", str(runs["mean-pooled"]), "--variants", "steps=5,warmup=3"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad --variants entry 'steps=5,warmup=3'" in err[0]
