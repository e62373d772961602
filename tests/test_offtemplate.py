"""bench.offtemplate: pruned models on phrasings in none of the templates, at their own token lengths."""
from pathlib import Path

import pytest

from bench.cli import main
from bench.offtemplate import main as offtemplate
from tasks import get_task


@pytest.fixture(scope="module")
def runs(teacher, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("off")
    out = {}
    for scheme in ("mean-pooled", "mean"):
        out[scheme] = root / scheme
        argv = ["extract", "--task", "ioi", "--model", teacher, "--n-patching", "4", "--n-val", "4", "--n-test", "4",
                "--alpha", "0.05", "--fit-steps", "5", "--ablation", scheme, "--device", "cpu",
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


def test_bad_runs_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        offtemplate(["--runs", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "circuit.json" in err[0]
