"""The GPU evidence script, dry: every part's steps on the CPU with a tiny model, so the script works the first
time a GPU is there; and a second call resumes, doing only what is left."""
from pathlib import Path

from bench.tools import gpu_evidence


def test_the_dry_run_makes_every_part_and_a_second_call_resumes(tmp_path, capsys):
    out = tmp_path / "evidence"
    assert gpu_evidence.main([str(out), "--dry-run", "--budget-s", "1200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [s.name for s in gpu_evidence.plan(out, gpu_evidence.dry_setting(out / "tiny-model"), "cpu")]
    assert {s.part for s in gpu_evidence.plan(out, gpu_evidence.REAL, "cuda")} == {"latency", "perf", "paper-budget"}
    for name in steps:  # a line as each step starts and as it ends, with the time so far
        assert any(line.endswith(f"/{name}: done") and line.startswith("[") for line in lines), (name, lines)
        assert (out / "done" / name).exists()
    for name in ("fp32-eager", "bf16-eager"):
        assert (out / "compare-smollm2-135m-gpu" / name / "report.md").is_file()
    assert (out / "restored" / "extract-ioi-s0" / "metrics.json").is_file()  # the records' restore path ran
    assert "same circuit" in (out / "perf-gpu.md").read_text()
    student = out / "distill-paper-budget" / "distill-ioi-s0"
    assert (student / "metrics.json").is_file() and (student / "checkpoints" / "last.ckpt").is_file()
    assert gpu_evidence.main([str(out), "--dry-run"]) == 0  # resumed: nothing left to do
    again = capsys.readouterr().out
    assert again.count("done before, skipped") == len(steps)


def test_a_failing_step_says_why_in_one_line_and_the_next_part_goes_on(tmp_path, capsys, monkeypatch):
    out = tmp_path / "evidence"
    bad = gpu_evidence.Step("latency", "broken", (("bench.cli", "extract", "--task", "nope"),), 60)
    later = gpu_evidence.Step("latency", "after-broken", (("bench.cli", "--help"),), 60)
    other = gpu_evidence.Step("perf", "other-part", (("bench.cli", "--help"),), 60)
    monkeypatch.setattr(gpu_evidence, "plan", lambda *a: [bad, later, other])
    assert gpu_evidence.main([str(out), "--device", "cpu"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any("latency/broken: failed (error: unknown task" in line for line in lines), lines
    assert any("latency/after-broken: skipped, an earlier step of its part failed" in line for line in lines)
    assert any(line.endswith("perf/other-part: done") for line in lines)
    assert not (out / "done" / "broken").exists() and Path(out / "logs" / "broken.log").is_file()


def test_a_step_with_no_budget_left_is_not_started(tmp_path, capsys, monkeypatch):
    step = gpu_evidence.Step("perf", "late", (("bench.cli", "--help"),), 60)
    monkeypatch.setattr(gpu_evidence, "plan", lambda *a: [step])
    assert gpu_evidence.main([str(tmp_path), "--device", "cpu", "--budget-s", "10"]) == 1
    assert "perf/late: skipped, 10 s of the budget left" in capsys.readouterr().out
