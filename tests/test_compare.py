"""`bench compare` on real tiny runs made with the real CLI: a tiny GPT-2 teacher (real SmolLM2 tokenizer) whose
answers lean to digits, so greater-than accuracy is not zero. Structure and consistency, not golden numbers."""
from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from pathlib import Path

import matplotlib.image
import pytest
import torch
from rich.console import Console
from transformers import GPT2Config, GPT2LMHeadModel

import bench.core.latency
from bench.cli import main
from bench.verbs.compare import CompareArgs, compare, full_model, print_compare
from bench.core.latency import measure
from bench.report.results import CKD, FULL, HEADS, HF, KD, MLPS
from models.types import BenchError

TASK = "greater-than"
SMALL = ["--n-patching", "4", "--n-val", "4", "--n-test", "8", "--fit-steps", "5"]
RUNS = {"e-mlps-s0": MLPS, "e-heads-s0": HEADS, "d-random-s0": KD, "d-circuit-s0": CKD}
COLUMNS = ["method", "n", "non-emb params (Δ%)", "accuracy (Δ pts)", "held-out accuracy (Δ pts)",
           "worst template Δ pts, test / held-out / off-template", "probability difference, test / held-out (gain)",
           "KL to full",
           "held-out KL",
           "latency b=8 ms median (p95)", "latency b=1 ms median (p95)", "generate 16 tokens b=1 ms (KV cache)",
           "build MACs", "build cost s",
           "warm-up s (compile)"]
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, smollm2_tokenizer) -> str:
    """A tiny GPT-2 whose final norm leans towards digit tokens: accuracy on greater-than is well above 0."""
    tok = smollm2_tokenizer
    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=len(tok), n_layer=2, n_head=4, n_embd=32, n_positions=64, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)
    model = GPT2LMHeadModel(cfg)
    digits = [tok.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[digits] *= 3
        model.transformer.ln_f.weight.mul_(0.5)
        model.transformer.ln_f.bias.copy_(wte[digits].mean(0) + 0.5 * wte[digits[7]])
    path = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def run_ok(argv: list[str]) -> None:
    assert main(argv) == 0, f"bench {' '.join(argv)} failed"


def extract(teacher: str, out: Path, *extra: str, seed: int = 0) -> None:
    run_ok(["extract", "--model", teacher, "--task", TASK, "--alpha", "0.05", *SMALL, "--seed", str(seed),
            "--device", "cpu", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, teacher) -> Path:
    """runs/ with one run of each method, seed 0; the students learn from the task stream and are tested on the
    circuit run's splits."""
    root = tmp_path_factory.mktemp("runs")
    extract(teacher, root / "e-mlps-s0")
    extract(teacher, root / "e-heads-s0", "--no-include-mlps")
    for name, init, pool in (("d-random-s0", "random", "0"), ("d-circuit-s0", "circuit", "12")):
        run_ok(["distill", "--task", TASK, "--match", str(root / "e-mlps-s0"), "--init", init, "--steps", "2",
                "--batch-size", "8", "--teacher-pool", pool, "--log-every", "1", "--device", "cpu", "--out",
                str(root / name)])
    return root


@pytest.fixture(scope="module")
def seed1(tmp_path_factory, teacher) -> Path:
    root = tmp_path_factory.mktemp("seed1")
    extract(teacher, root / "e-mlps-s1", seed=1)
    return root


@pytest.fixture(scope="module")
def result(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "out"
    return compare(CompareArgs(task=TASK, runs=[str(runs)], device="cpu", out=str(out)))


def rjson(path: Path) -> dict:
    return json.loads(path.read_text())


def rcsv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table_rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.01  # not blank


# ---- the report ----------------------------------------------------------------------------------------

def test_report_files_tables_and_plots(result):
    out = result.out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.md", "results.csv", "runs.csv", f"accuracy-vs-compute-{TASK}.png", f"accuracy-vs-params-{TASK}.png",
         f"latency-{TASK}.png", f"distillation-{TASK}.png"])
    md = (out / "report.md").read_text()
    assert f"## {TASK}" in md and "shared by every run" in md and f"`{result.command}`" in md
    assert result.command.startswith(f"bench compare --task {TASK} --runs ") and "--latency-runs 20" in result.command
    assert f"Device: {result.env['device']}; dtype float32; torch {torch.__version__}" in md
    header, _, *body = table_rows(md)
    assert header == COLUMNS
    assert [r[0] for r in body] == [FULL, HF, MLPS, HEADS, KD, CKD]
    assert all(len(r) == len(COLUMNS) and r[1] == "1" and "±" not in " ".join(r) for r in body)
    assert "The smallest model is" in md and "Against the full model:" in md and "Against distillation" in md
    assert md.index(f"![accuracy-vs-compute-{TASK}.png]") < md.index(f"![accuracy-vs-params-{TASK}.png]")  # first
    assert "The students reach their circuit's held-out accuracy: seed 0 " in md
    budgets = next(line for line in md.splitlines() if line.startswith("Students' budgets"))
    assert "d-random-s0: 2 steps × " in budgets and "0.0% of the paper's 20,000 steps" in budgets and "MACs" in budgets
    for png in out.glob("*.png"):
        check_png(png)
        assert f"![{png.name}]({png.name})" in md


def test_numbers_agree_with_the_runs(result, runs):
    by_run = {Path(r["run"]).name: r for r in rcsv(result.out / "runs.csv") if r["run"]}
    full = next(r for r in rcsv(result.out / "runs.csv") if r["method"] == FULL)
    assert set(by_run) == set(RUNS) and all(by_run[n]["method"] == m for n, m in RUNS.items())
    ext = rjson(runs / "e-mlps-s0" / "metrics.json")
    assert int(float(full["non_embedding"])) == ext["full"]["non_embedding"]
    assert float(full["accuracy"]) == ext["full"]["test_accuracy"] > 0.2
    assert float(full["heldout_accuracy"]) == ext["full"]["heldout_accuracy"]
    full_params = ext["full"]["non_embedding"]
    for name, row in by_run.items():
        m = rjson(runs / name / "metrics.json")
        mine = m["pruned"] if name.startswith("e-") else m["student"]
        assert int(float(row["non_embedding"])) == mine["non_embedding"] == int(float(row["reported_non_embedding"]))
        assert float(row["accuracy"]) == mine["test_accuracy"]
        assert float(row["heldout_accuracy"]) == mine["heldout_accuracy"]
        kl = mine.get("test_kl_to_full", mine.get("test_kl_to_teacher"))
        assert float(row["kl_to_full"]) == pytest.approx(kl, rel=1e-3, abs=1e-6) and kl > 0
        kl = mine.get("heldout_kl_to_full", mine.get("heldout_kl_to_teacher"))
        assert float(row["heldout_kl_to_full"]) == pytest.approx(kl, rel=1e-3, abs=1e-6) and kl > 0
        held = 100 * (mine["heldout_accuracy"] - float(full["heldout_accuracy"]))
        assert float(row["heldout_accuracy_delta_pts"]) == pytest.approx(held)
        assert float(row["params_delta_pct"]) == pytest.approx(100 * (mine["non_embedding"] / full_params - 1))
        delta = 100 * (mine["test_accuracy"] - float(full["accuracy"]))
        assert float(row["accuracy_delta_pts"]) == pytest.approx(delta)
    search = ext["search"]["wall_s"]
    assert ext["fit"]["steps"] > 0  # the constants' fit is part of what a circuit costs to build
    assert (f"constants fitted for {ext['fit']['steps']} steps × 32 prompts at lr 0.003, after 0–"
            f"{ext['fit']['jitter']} filler sentences") in by_run["e-mlps-s0"]["settings"]
    n = len(ext["fit"]["lengths"])  # the task's training templates of other token lengths widen the fit
    assert (f"prompts of {n} token lengths" in by_run["e-mlps-s0"]["settings"]) == (n > 1)
    assert float(by_run["e-mlps-s0"]["build_s"]) == pytest.approx(search + ext["fit"]["wall_s"])
    train = rjson(runs / "d-circuit-s0" / "metrics.json")["train"]  # a pooled student: the pool's teacher too
    assert train["teacher_pool_s"] > 0
    circuit = search + ext["fit"]["wall_s"]
    student_s = train["wall_s"] + train["teacher_pool_s"]
    assert float(by_run["d-circuit-s0"]["build_s"]) == pytest.approx(circuit + student_s)
    macs = ext["build"]["macs"]  # MACs: the circuit's build; a student's pool and steps; both for circuit + KD
    assert int(float(by_run["e-mlps-s0"]["build_macs"])) == macs
    assert int(float(by_run["d-circuit-s0"]["build_macs"])) == macs + train["macs"]
    random_train = rjson(runs / "d-random-s0" / "metrics.json")["train"]
    assert int(float(by_run["d-random-s0"]["build_macs"])) == random_train["macs"]
    e = rjson(runs / "e-mlps-s0" / "metrics.json")  # the worst template, as the extraction measured it
    held_worst = e["pruned"]["heldout_worst"]["delta_pts"]
    assert float(by_run["e-mlps-s0"]["heldout_worst_delta_pts"]) == pytest.approx(held_worst)
    assert set(e["pruned"]["heldout_by_template"]) == {"opened-closed", "until-the-year", "was-from-the-year"}
    for name, row in by_run.items():  # greater-than's own score, as the runs measured it
        mine = rjson(runs / name / "metrics.json")
        mine = mine["pruned"] if name.startswith("e-") else mine["student"]
        assert float(row["score"]) == pytest.approx(mine["test_score"], abs=1e-6)
        assert float(row["heldout_score_gain"]) == pytest.approx(mine["heldout_score_gain"], abs=1e-6)
    for name in ("e-mlps-s0", "d-circuit-s0"):  # the search column is the search alone, the fit is training
        assert float(by_run[name]["search_s"]) == pytest.approx(search)
    assert "prompts of a 12-prompt teacher pool" in by_run["d-circuit-s0"]["settings"]
    assert "streamed prompts" in by_run["d-random-s0"]["settings"]
    assert by_run["d-random-s0"]["search_s"] == "" and float(by_run["d-random-s0"]["build_s"]) > 0


def test_latency_fields_and_table_cells(result):
    rows = rcsv(result.out / "runs.csv")
    assert len(rows) == 6
    for r in rows:
        assert float(r["latency_median_ms"]) <= float(r["latency_p95_ms"])
        assert float(r["latency_b1_median_ms"]) <= float(r["latency_b1_p95_ms"])
        assert (r["batch"], r["n_test"], r["dtype"], r["torch"]) == ("8", "8", "float32", torch.__version__)
        assert int(r["seq_len"]) > 5 and r["device"].startswith("cpu")
    for m in result.tasks[0].measurements:
        assert (m.latency.batch, m.latency_b1.batch, m.latency.runs, m.latency_b1.runs) == (m.n_test, 1, 20, 20)
        assert m.latency_b1.seq_len == m.latency.seq_len and m.latency_b1.median_ms <= m.latency_b1.p95_ms
    hf = next(r for r in rows if r["method"] == HF)
    assert float(hf["kl_to_full"]) < 1e-6  # our unpruned PrunedModel is the HF model
    results = {r["method"]: r for r in rcsv(result.out / "results.csv")}
    assert list(results) == [FULL, HF, MLPS, HEADS, KD, CKD]
    md_rows = {r[0]: r for r in table_rows((result.out / "report.md").read_text())}
    for r in rows:
        agg = results[r["method"]]
        assert agg["n"] == "1" and agg["non_embedding_std"] == "" and agg["accuracy_std"] == ""
        assert float(agg["latency_median_ms_mean"]) == pytest.approx(float(r["latency_median_ms"]))
        cells = md_rows[r["method"]]
        assert cells[2].startswith(f"{int(float(r['non_embedding'])):,}")
        assert cells[3].startswith(f"{100 * float(r['accuracy']):.1f}%")
        assert cells[4].startswith(f"{100 * float(r['heldout_accuracy']):.1f}%")
        assert cells[6].startswith(f"{float(r['score']):.3f} / {float(r['heldout_score']):.3f} (gain ")
        assert cells[9].startswith(f"{float(r['latency_median_ms']):.2f} (")
        assert cells[11] == f"{float(r['generate_median_ms']):.1f}"  # every model here is position-free
        assert cells[12] == ("—" if r["method"] in (FULL, HF) else f"{float(r['build_macs']):.3g}")
        if r["method"] not in (FULL, HF):  # the worst template against the full model's accuracy on it
            w, hw = float(r["worst_delta_pts"]), float(r["heldout_worst_delta_pts"])
            ow = float(r["offtemplate_worst_delta_pts"])  # every model here is position-free
            assert cells[5].startswith(f"{w:+.1f} / {hw:+.1f} / {ow:+.1f} (")


def test_seeds_give_mean_std_and_their_own_test_splits(runs, seed1, tmp_path):
    r = compare(CompareArgs(task=TASK, runs=[str(runs / "e-mlps-s0"), str(seed1)], device="cpu",
                            out=str(tmp_path / "o"), hf_reference=False))
    (task,) = r.tasks
    assert not task.shared and len(task.splits) == 2
    md = (tmp_path / "o" / "report.md").read_text()
    assert "do not share one test set" in md
    header, _, *body = table_rows(md)
    assert [b[0] for b in body] == [FULL, MLPS] and [b[1] for b in body] == ["2", "2"]
    assert all("±" in c for c in body[1][2:10])  # every measured number of the two seeds has a std
    rows = {x["method"]: x for x in rcsv(tmp_path / "o" / "results.csv")}
    assert rows[MLPS]["seeds"] == "0 1" and rows[MLPS]["accuracy_std"] != ""
    fulls = {m.split: m for m in task.measurements if m.method == FULL}
    deltas = []
    for m in (m for m in task.measurements if m.method == MLPS):
        full = fulls[m.split]  # each run against the full model on its own split
        assert m.full_accuracy == full.accuracy
        deltas.append(100 * (m.latency.median_ms / full.latency.median_ms - 1))
        assert m.latency_delta_pct == pytest.approx(deltas[-1])
    assert float(rows[MLPS]["latency_delta_pct_std"]) == pytest.approx(statistics.stdev(deltas))
    assert re.search(r"parameters, [-+][\d.]+ ± [\d.]+% median latency at b=\d+ \([-+][\d.]+ ± [\d.]+% at b=1\)", md)


def test_print_compare(result):
    console = Console(record=True, width=250)
    print_compare(result, console)
    text = console.export_text()
    labels = (FULL, HF, MLPS, HEADS, KD, CKD, "b=8 ms (p95)", str(result.out))
    missing = [label for label in labels if label not in text]
    assert not missing, (missing, text)


# ---- the latency measurer ------------------------------------------------------------------------------

def test_latency_measure_on_cpu(teacher):
    from models.loading import load_model

    hf, _ = load_model(teacher, device="cpu")
    model, ids = full_model(hf), torch.randint(0, 100, (3, 7))
    lat = measure(model, ids, runs=21, warmup=2)
    assert (lat.runs, lat.batch, lat.seq_len, lat.dtype, lat.torch) == (21, 3, 7, "float32", torch.__version__)
    assert 0 < lat.median_ms <= lat.p95_ms and lat.device.startswith("cpu")
    assert set(lat.to_dict()) == {"median_ms", "p95_ms", "runs", "batch", "seq_len", "device", "dtype", "torch",
                                  "warmup_s"}
    assert lat.warmup_s > 0
    with pytest.raises(ValueError):
        measure(model, ids, runs=0)


class Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        self.calls += 1
        return ids


def test_latency_median_and_p95_of_known_times(monkeypatch):
    """20 timed runs of 1..20 ms in a scrambled order: median 10.5, p95 the 19th smallest; warm-up runs untimed."""
    times = iter([float((7 * i) % 20 + 1) for i in range(20)])
    monkeypatch.setattr(bench.core.latency, "_time_once", lambda fn, device: next(times))
    model = Counting()
    lat = measure(model, torch.zeros(4, 6, dtype=torch.long), runs=20, warmup=3)
    assert (lat.median_ms, lat.p95_ms, lat.runs, lat.batch, lat.seq_len) == (10.5, 19.0, 20, 4, 6)
    assert model.calls == 3


# ---- bad inputs: one line each, nothing written --------------------------------------------------------

def copy_run(runs: Path, name: str, dest: Path) -> Path:
    shutil.copytree(runs / name, dest)
    return dest


def edit_json(path: Path, fn) -> None:
    data = rjson(path)
    fn(data)
    path.write_text(json.dumps(data))


def bad_cases(runs: Path, tmp: Path) -> dict[str, tuple[dict, str]]:
    mixed = tmp / "mixed"
    mixed.mkdir()
    copy_run(runs, "e-mlps-s0", mixed / "a")
    edit_json(copy_run(runs, "e-heads-s0", mixed / "b") / "config.json", lambda c: c["args"].update(model="gpt2"))
    corrupt = copy_run(runs, "e-heads-s0", tmp / "corrupt")
    (corrupt / "metrics.json").write_text('{"pruned": ')
    broken = copy_run(runs, "e-heads-s0", tmp / "broken")
    edit_json(broken / "config.json", lambda c: c["args"].pop("include_mlps"))
    unfinished = copy_run(runs, "d-random-s0", tmp / "unfinished")
    (unfinished / "metrics.json").unlink()
    (tmp / "empty").mkdir()
    dup = copy_run(runs, "e-mlps-s0", tmp / "dup")
    full = tmp / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    r = str(runs)
    return {
        "mixed models": ({"runs": [str(mixed)]}, "the runs mix models"),
        "no such model": ({"runs": [r], "model": "gpt2"}, "no runs of --model gpt2"),
        "no runs of the task": ({"runs": [r], "task": "ioi"}, "no runs of task ioi"),
        "corrupt json": ({"runs": [str(corrupt)]}, "metrics.json is corrupt"),
        "corrupt config": ({"runs": [str(broken)]}, "corrupt config.json or metrics.json"),
        "unfinished": ({"runs": [str(unfinished)]}, "unfinished"),
        "not a directory": ({"runs": [str(tmp / "nope")]}, "is not a directory"),
        "no run dirs": ({"runs": [str(tmp / "empty")]}, "holds no run directories"),
        "duplicate": ({"runs": [r, str(dup)]}, "same method, settings and seed"),
        "existing out": ({"runs": [r], "out": str(full)}, "already holds results; pass --overwrite"),
        "few latency runs": ({"runs": [r], "latency_runs": 5}, "--latency-runs must be >= 20"),
        "unknown report": ({"runs": [r], "report": "html"}, "unknown --report"),
        "unknown compile mode": ({"runs": [r], "compile": "warp"}, "unknown --compile 'warp'"),
        "batch size": ({"runs": [r], "batch_size": 0}, "--batch-size must be >= 1"),
        "unknown task": ({"runs": [r], "task": "sorting"}, "unknown task"),
    }


def test_bad_inputs_are_one_clear_line(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a regression that gets past a check writes its default --out here, not in the repo
    for name, (kw, message) in bad_cases(runs, tmp_path).items():
        with pytest.raises(BenchError) as e:
            compare(CompareArgs(**{"task": TASK, "device": "cpu", **kw}))
        assert message in str(e.value) and "\n" not in str(e.value), name
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]


def test_default_runs_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchError, match="no runs/ directory here"):
        compare(CompareArgs(task="all", device="cpu"))


def test_overwrite_replaces_a_report(runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    other = copy_run(runs, "d-random-s0", tmp_path / "other")  # another task's unfinished run: not in the way
    edit_json(other / "config.json", lambda c: c["args"].update(task="ioi"))
    (other / "metrics.json").unlink()
    r = compare(CompareArgs(task=TASK, runs=[str(runs / "e-heads-s0"), str(other)], out=str(out), overwrite=True,
                            device="cpu", hf_reference=False))
    assert [t.task for t in r.tasks] == [TASK] and not (out / "old.txt").exists() and (out / "report.md").is_file()
    with pytest.raises(BenchError, match="unfinished"):
        compare(CompareArgs(task="all", runs=[str(runs / "e-heads-s0"), str(other)], device="cpu"))
    assert [b[0] for b in table_rows((out / "report.md").read_text())[2:]] == [FULL, HEADS]


def test_cli(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--task", TASK, "--runs", str(runs), "--latency-runs", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and ">= 20" in err and "\n" not in err
    out = tmp_path / "o"
    assert main(["compare", "--task", TASK, "--runs", str(runs / "e-heads-s0"), str(runs / "e-mlps-s0"), "--out",
                 str(out), "--device", "cpu", "--no-hf-reference", "--latency-runs", "21"]) == 0
    printed, said = capsys.readouterr()
    assert said.splitlines()[-1].endswith(f"compare {TASK}: run 2/2, {runs / 'e-mlps-s0'}")  # progress, on stderr
    assert (out / "report.md").is_file() and f"report: {out / 'report.md'}" in printed.replace("\n", "")
    assert HEADS in printed and MLPS in printed and "b=8 ms (p95)" in printed  # not wrapped, though not a terminal
    assert "--latency-runs 21" in (out / "report.md").read_text()


def test_distillation_curves_come_from_the_runs_logs(runs):
    from bench.report.curves import read_scalars

    for name in ("d-random-s0", "d-circuit-s0"):
        s = read_scalars(runs / name)
        assert [step for step, _ in s["train/l_distill"]] == [1, 2]  # --log-every 1
        for tag in ("val/accuracy", "heldout/accuracy"):
            assert [step for step, _ in s[tag]] == [0, 2], tag  # before training and at the end
    assert read_scalars(runs / "e-mlps-s0") == {}  # an extraction run has no training curves


def test_compiled_compare_matches_eager(runs, result, tmp_path):
    """--compile default (inductor, CPU) on the full model and one circuit: the same accuracies and KLs as eager
    (fp32, to 1e-4), the mode in the report, and each model's warm-up (compilation included) in runs.csv."""
    out = tmp_path / "compiled"
    run_ok(["compare", "--task", TASK, "--runs", str(runs / "e-mlps-s0"), "--device", "cpu", "--compile", "default",
            "--no-hf-reference", "--out", str(out)])
    eager = {r["method"]: r for r in csv.DictReader(open(result.out / "runs.csv"))}
    mine = list(csv.DictReader(open(out / "runs.csv")))
    assert [r["method"] for r in mine] == [FULL, MLPS]
    for r in mine:
        for key in ("accuracy", "heldout_accuracy", "kl_to_full", "heldout_kl_to_full"):
            assert float(r[key]) == pytest.approx(float(eager[r["method"]][key]), abs=1e-4), (r["method"], key)
        assert float(r["warmup_s"]) > 0
    md = (out / "report.md").read_text()
    assert "torch.compile(mode='default')" in md and "--compile default" in md


def test_where_a_students_curve_reaches_its_circuit():
    from types import SimpleNamespace

    from bench.report.compute import Curve, reach

    circuit = SimpleNamespace(build_macs=100, heldout_accuracy=0.8)
    curve = Curve(None, (10, 50, 150, 300), (0, 0, 0, 0), (0.1, 0.5, 0.7, 0.85))
    assert reach(circuit, curve) == (0.5, 3.0, 3.0)  # 50% at its compute; 80% first at 300 MACs, 3x
    late = Curve(None, (200, 400), (0, 0), (0.6, 0.7))
    assert reach(circuit, late) == (None, None, 4.0)  # starts past the circuit's compute; not reached by 4x
