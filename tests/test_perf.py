"""`python -m bench.tools.perf` end to end on a tiny model: the tables it writes, not their timings."""
import pytest

from bench.tools.perf import main as perf

pytestmark = pytest.mark.usefixtures("one_thread")


def test_perf_writes_engine_dtype_and_latency_tables(teacher, tmp_path):
    out = tmp_path / "perf.md"
    argv = ["--model", teacher, "--tasks", "ioi", "--alpha", "0.3", "--n-patching", "4", "--n-val", "4",
            "--n-test", "4", "--runs", "2", "--device", "cpu", "--fast-dtypes", "bfloat16", "--speculate", "4", "--out", str(out)]
    assert perf(argv) == 0
    text = out.read_text()
    engines = next(line for line in text.splitlines() if line.startswith("| ioi |"))
    cells = [c.strip() for c in engines.strip("|").split("|")]
    assert cells[-1] == "yes"  # both fp32 engines found the same circuit
    assert float(cells[4].rstrip("×")) > 1  # the MAC ratio: the fast engine does less arithmetic
    assert "| ioi | bfloat16 |" in text and "## Pruned vs full model latency" in text
    wide = next(line for line in text.splitlines() if line.startswith("| ioi | 4 |"))
    assert wide.rstrip(" |").endswith("yes")  # speculation returned the reference circuit


def test_perf_rejects_an_unknown_dtype_in_one_line(teacher, capsys):
    with pytest.raises(SystemExit) as e:
        perf(["--model", teacher, "--fast-dtypes", "fp7"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
