"""How a comparison is written: the markdown report in the manner of the paper's Table 1, with a paragraph that
reads the numbers, the CSV files, and the figures beside them."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from bench.core.budget import in_words
from bench.report.compute import sentence
from bench.report.figures import plot_task
from bench.report.results import (CKD, FULL, HEADS, HF, KD, METRICS, MLPS, CompareResult, Measurement, Row, Stat,
                                  TaskResult, batches, rows)
from tasks import get_task


# ---- formatting ----------------------------------------------------------------------------------------

def pm(s: Stat | None, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    if s is None:
        return "—"
    text = format(s.mean * scale, spec)
    return text + (f" ± {format(s.std * scale, spec.lstrip('+'))}" if s.std is not None else "") + suffix


def small(x: float) -> str:
    return "0" if x == 0 else (f"{x:.4f}" if abs(x) >= 1e-3 else f"{x:.1e}")


HEADER = ("method", "n", "non-emb params (Δ%)", "accuracy (Δ pts)", "held-out accuracy (Δ pts)",
          "worst template Δ pts, test / held-out / off-template", "{score}",
          "KL to full", "held-out KL", "latency b={b} ms median (p95)", "latency b=1 ms median (p95)",
          "generate 16 tokens b=1 ms (KV cache)", "build MACs",
          "build cost s", "warm-up s (compile)")
SCORE = 6  # the column of the task's own score, left out for a task without one


def scored(table: list[Row]) -> bool:
    """Whether the task has its own score (greater-than's probability difference) in this table."""
    return any(r["score"] is not None for r in table)


def cells(row: Row, with_score: bool = False, short: bool = False) -> list[str]:
    """The table cells of one row (markdown and the terminal table share them); `with_score`: the task's own
    score and its gain over another prompt's target, test / held-out; `short`: the terminal's narrower cells."""
    params = pm(row["non_embedding"], ",.0f") + (f" ({pm(row['params_delta_pct'], '+.1f', suffix='%')})"
                                                  if row.reduced else "")
    acc, held = (pm(row[k], ".1f", 100, "%") + (f" ({pm(row[k + '_delta_pts'], '+.1f')})" if row.method != FULL else "")
                 for k in ("accuracy", "heldout_accuracy"))
    kl_text, held_kl = (small(s.mean) + (f" ± {small(s.std)}" if s.std is not None else "")
                        for s in (row["kl_to_full"], row["heldout_kl_to_full"]))
    lat = [f"{pm(row[k + '_median_ms'], '.2f')} ({pm(row[k + '_p95_ms'], '.2f')})"
           + (f", {pm(row[k + '_delta_pct'], '+.1f', suffix='%')}" if row.reduced else "")
           for k in ("latency", "latency_b1")]
    score = (f"{pm(row['score'], '.3f')} / {pm(row['heldout_score'], '.3f')} (gain "
             f"{pm(row['score_gain'], '.3f')} / {pm(row['heldout_score_gain'], '.3f')})")
    if short:
        score = f"{pm(row['score'], '.2f')} ({pm(row['score_gain'], '.2f')})"
    out = [row.label, str(row.n), params, acc, held, worst_cell(row, short), score, kl_text, held_kl, *lat,
           pm(row["generate_median_ms"], ".1f"), pm(row["build_macs"], ".3g"), pm(row["build_s"], ".3g"),
           pm(row["warmup_s"], ".3g")]
    return out if with_score else out[:SCORE] + out[SCORE + 1:]


SHORT = ("method", "n", "params (Δ%)", "accuracy (Δ pts)", "held-out (Δ pts)", "worst template Δ", "{score}", "KL",
         "held-out KL", "b={b} ms (p95)", "b=1 ms (p95)", "gen 16 ms", "build MACs", "build s", "warm-up s")


def worst_cell(row: Row, short: bool = False) -> str:
    """The worst template's accuracy against the full model's on it, test / held-out (mean ± std over runs), and
    which templates they are for a single run."""
    if not row.reduced:  # the full model's weakest template, for reference
        lows = [min(d.values()) for m in row.runs
                for d in (m.by_template, m.heldout_by_template, m.offtemplate_by_template) if d]
        return f"lowest {100 * min(lows):.0f}%" if lows else "—"
    cell = " / ".join(pm(row[k], "+.1f") for k in ("worst_delta_pts", "heldout_worst_delta_pts",
                                                   "offtemplate_worst_delta_pts"))
    names = [w["template"] for w in (row.runs[0].worst(s) for s in ("test", "heldout", "offtemplate")) if w]
    return cell + (f" ({' / '.join(names)})" if row.n == 1 and names and not short else "")


def header(task: TaskResult, short: bool = False, with_score: bool = False) -> list[str]:
    """The table's column names; `short` ones for a terminal; `with_score`: the task's own score's column."""
    name = get_task(task.task).score_name
    score = "score (gain)" if short else f"{name}, test / held-out (gain)"
    out = [h.format(b=batches(task), score=score) for h in (SHORT if short else HEADER)]
    return out if with_score else out[:SCORE] + out[SCORE + 1:]


def budgets(task: TaskResult) -> list[str]:
    """Each student's budget in words: steps × batch, MACs, seconds and share of the paper's steps."""
    said = [f"{Path(m.run).name}: " + in_words(m.reported["steps"], m.reported["batch_size"], m.build_macs or 0,
                                                m.build_s or 0.0)
            for m in task.measurements if m.method in (KD, CKD) and "steps" in m.reported]
    return ["Students' budgets (circuit + KD: its circuit's build included in MACs and seconds): "
            + "; ".join(said) + "."] if said else []


# ---- the paragraph that reads the numbers --------------------------------------------------------------

def _cut(row: Row, metric: str, full: Row) -> float:
    return 100 * (1 - row[metric].mean / full[metric].mean)


def summary(task: TaskResult, table: list[Row]) -> str:
    full = next(r for r in table if r.method == FULL)
    reduced = [r for r in table if r.reduced]
    if not reduced:
        return f"Only the full model was measured on {task.task}."
    fp, fa = full["non_embedding"].mean, full["accuracy"].mean
    smallest = min(reduced, key=lambda r: r["non_embedding"].mean)
    best = max(reduced, key=lambda r: (r["accuracy"].mean, -r["non_embedding"].mean))
    out = [f"The smallest model is {smallest.label} with {smallest['non_embedding'].mean:,.0f} non-embedding "
           f"parameters, {_cut(smallest, 'non_embedding', full):.1f}% fewer than the full model's {fp:,.0f}; it scores "
           f"{smallest['accuracy'].mean:.1%} against {fa:.1%} ({smallest['accuracy_delta_pts'].mean:+.1f} pts) at a "
           f"KL of {small(smallest['kl_to_full'].mean)} to the full model. On the held-out templates it scores "
           f"{smallest['heldout_accuracy'].mean:.1%} against {full['heldout_accuracy'].mean:.1%} "
           f"({smallest['heldout_accuracy_delta_pts'].mean:+.1f} pts)."]
    if best is not smallest:
        out.append(f"The most accurate reduced model is {best.label} at {best['accuracy'].mean:.1%} "
                   f"({best['accuracy_delta_pts'].mean:+.1f} pts; held-out templates "
                   f"{best['heldout_accuracy_delta_pts'].mean:+.1f} pts) with {_cut(best, 'non_embedding', full):.1f}% "
                   "fewer parameters.")
    closest = min(reduced, key=lambda r: r["kl_to_full"].mean)
    if len(reduced) > 1:
        out.append(f"The lowest KL to the full model is {closest.label}'s ({small(closest['kl_to_full'].mean)}).")
    out += [s for s in (_versus(reduced), sentence(task), _latency(reduced, batches(task)), _hf(table, full)) if s]
    return " ".join(out)


def _versus(reduced: list[Row]) -> str:
    """The best circuit against the best student distilled from scratch (the paper's comparison), then what
    fine-tuning a circuit with KD changed."""
    best = lambda rs: max(rs, key=lambda r: r["accuracy"].mean) if rs else None  # noqa: E731
    circuit = best([r for r in reduced if r.method in (MLPS, HEADS)])
    student, tuned = best([r for r in reduced if r.method == KD]), best([r for r in reduced if r.method == CKD])
    out = []
    if circuit and student:
        gap = 100 * (circuit["accuracy"].mean - student["accuracy"].mean)
        how = ("as accurate as" if abs(gap) < 0.05 else
               f"{abs(gap):.1f} pts {'more' if gap > 0 else 'less'} accurate than")
        cb, sb, cm, sm = circuit["build_s"], student["build_s"], circuit["build_macs"], student["build_macs"]
        cost = (f"{cm.mean:.3g} MACs ({cb.mean:.3g} s) against {sm.mean:.3g} MACs ({sb.mean:.3g} s)" if cm and sm and
                cb and sb else f"{cb.mean:.3g} s against {sb.mean:.3g} s" if cb and sb else "")
        out.append(f"Against distillation, {circuit.label} is {how} {student.label} ({circuit['accuracy'].mean:.1%} vs "
                   f"{student['accuracy'].mean:.1%}; held-out templates {circuit['heldout_accuracy'].mean:.1%} vs "
                   f"{student['heldout_accuracy'].mean:.1%}; KL {small(circuit['kl_to_full'].mean)} vs "
                   f"{small(student['kl_to_full'].mean)}) at {circuit['non_embedding'].mean:,.0f} vs "
                   f"{student['non_embedding'].mean:,.0f} parameters"
                   + (f", and took {cost} to build." if cost else "."))
    out += [_blind(r) for r in reduced if _blind(r)]
    if circuit and tuned:
        out.append(f"Fine-tuning circuits with KD ({tuned.label}) reaches {tuned['accuracy'].mean:.1%} at KL "
                   f"{small(tuned['kl_to_full'].mean)}, against {circuit['accuracy'].mean:.1%} at KL "
                   f"{small(circuit['kl_to_full'].mean)} for {circuit.label}.")
    return " ".join(out)


def _blind(row: Row) -> str:
    """A caution where a model's accuracy comes without reading the prompt: a task score whose gain over another
    prompt's target is under a tenth of the score (a constant answer's is 0)."""
    s, g = row["score"], row["score_gain"]
    if s is None or g is None or g.mean >= 0.1 * abs(s.mean):
        return ""
    return (f"{row.label}'s accuracy ({row['accuracy'].mean:.1%}) is no win: like a constant answer's, its score "
            f"barely depends on the prompt (gain {g.mean:.3f} over another prompt's target, against a score of "
            f"{s.mean:.3f}).")


def _latency(reduced: list[Row], b: str) -> str:
    """Latency change against parameter change for every reduced row, then whether latency keeps up."""
    parts, smaller = [], []
    for r in reduced:
        p, lat, lat1 = (r[k] for k in ("params_delta_pct", "latency_delta_pct", "latency_b1_delta_pct"))
        parts.append(f"{r.label} {pm(p, '+.1f', suffix='%')} parameters, {pm(lat, '+.1f', suffix='%')} median "
                     f"latency at b={b} ({pm(lat1, '+.1f', suffix='%')} at b=1)")
        smaller.append(lat.mean > p.mean)  # both negative: a smaller cut is the larger delta
    verdict = ("the latency cut is smaller than the parameter cut for every reduced model" if all(smaller) else
               "the latency cut is larger than the parameter cut for every reduced model" if not any(smaller) else
               "the latency cut is smaller than the parameter cut for "
               + ", ".join(r.label for r, s in zip(reduced, smaller) if s) + " and larger for the others")
    return "Against the full model: " + "; ".join(parts) + f". At b={b}, {verdict}."


def _hf(table: list[Row], full: Row) -> str:
    hf = next((r for r in table if r.method == HF), None)
    if hf is None:
        return ""
    return (f"As a check, the full model as a PrunedModel matches the Hugging Face model (KL "
            f"{small(hf['kl_to_full'].mean)}, accuracy {hf['accuracy'].mean:.1%}); at b={full.runs[0].latency.batch} "
            f"they take {full['latency_median_ms'].mean:.2f} ms and {hf['latency_median_ms'].mean:.2f} ms.")


# ---- files ---------------------------------------------------------------------------------------------

def compiled(mode: str) -> str:
    if mode == "none":
        return "eager"
    return (f"models compiled with torch.compile(mode={mode!r}) (the HF reference eager; the warm-up column holds "
            "each model's warm-up, compilation included)")


def markdown(result: CompareResult, plots: dict[str, list[str]]) -> str:
    e = result.env
    lines = [f"# Circuits vs distillation — {result.model}", "", f"Command: `{result.command}`", "",
             f"Device: {e['device']}; dtype {e['dtype']}; torch {e['torch']}; transformers {e['transformers']}"
             + (f"; {e['load']} when the comparison started" if e.get("load") else "") + ". "
             f"Latency: median (p95) of {e['latency_runs']} timed forwards after {e['warmup']} warm-up, "
             f"{compiled(e.get('compile', 'none'))}, under "
             f"inference_mode, {e['timer']}; every model returns last-position logits through the same PrunedModel "
             "code path (the full model is the PrunedModel with nothing removed). Accuracy and KL (to that full "
             "model, next-token distribution at the last position) are on the runs' test split (prompts of the "
             "training templates that the search never saw) and on their held-out split (templates the search never "
             "saw).", ""]
    for task in result.tasks:
        lines += task_section(task, plots.get(task.task, []))
    return "\n".join(lines) + "\n"


def task_section(task: TaskResult, plots: list[str]) -> list[str]:
    table = rows(task)
    m0 = task.measurements[0]
    where = (f"one test split of {m0.n_test} prompts × {m0.latency.seq_len} tokens, shared by every run" if task.shared
             else f"the runs do not share one test set ({len(task.splits)} test splits, of the runs of seeds "
                  + "; ".join(", ".join(map(str, s)) for s in task.splits.values()) + "); each run is scored on its "
                  "own test split and compared with the full model on that split; the full model's row is over the "
                  "splits")
    s = scored(table)
    names = header(task, with_score=s)
    lines = [f"## {task.task}", "", f"Test set: {where}.", "",
             "| " + " | ".join(names) + " |", "| --- |" + " ---: |" * (len(names) - 1)]
    lines += ["| " + " | ".join(cells(r, s)) + " |" for r in table]
    seeds = lambda r: ", ".join(str(m.seed) for m in r.runs)  # noqa: E731
    lines += ["", "Settings: " + "; ".join(f"{r.label}: {r.settings} (n={r.n}, seeds {seeds(r)})"
                                           for r in table if r.reduced) + ".",
              "n: runs of the method (full model: test splits); mean ± std where n ≥ 2, the single value otherwise. "
              "Build cost: Algorithm 1's search wall time for circuits (and the fit of their constants), the "
              "training wall time (and a teacher pool's "
              "forward) for students, both for "
              "circuit + KD (as each run recorded it, on its own device); build MACs: the same builds in "
              "multiply-accumulates, counted from the shapes that ran, the same on every device. "
              + (f"{get_task(task.task).score_name.capitalize()}: the task's own score, and its gain over the same "
                 "model scored against another prompt's target (0 for a model whose answers ignore the prompt, "
                 "such as a constant answer). " if s else "") + "Warm-up: the untimed forwards before the "
              "timed ones at both batch sizes, compilation and graph capture included when compiled: a deployer's "
              "one-time cost.", *budgets(task), *task.notes, "", summary(task, table), ""]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    return lines


RUN_COLUMNS = ("task", "method", "settings", "run", "seed", "split", "n_test", *METRICS, "batch", "seq_len",
               "device", "dtype", "torch", "reported_non_embedding", "reported_accuracy", "reported_kl")


def run_record(m: Measurement) -> dict:
    lat = m.latency
    return {"task": m.task, "method": m.method, "settings": m.settings, "run": m.run, "seed": m.seed, "split": m.split,
            "n_test": m.n_test, **{k: fn(m) for k, fn in METRICS.items()}, "batch": lat.batch, "seq_len": lat.seq_len,
            "device": lat.device, "dtype": lat.dtype, "torch": lat.torch,
            **{f"reported_{k}": m.reported.get(k) for k in ("non_embedding", "accuracy", "kl")}}


RESULT_COLUMNS = ("task", "method", "settings", "n", "seeds",
                  *(f"{k}_{s}" for k in METRICS for s in ("mean", "std")),
                  "batch", "seq_len", "device", "dtype", "torch")


def row_record(task: TaskResult, row: Row) -> dict:
    lat = row.runs[0].latency
    rec = {"task": task.task, "method": row.method, "settings": row.settings, "n": row.n,
           "seeds": " ".join(str(m.seed) for m in row.runs if m.seed is not None), "batch": batches(task),
           "seq_len": lat.seq_len, "device": lat.device, "dtype": lat.dtype, "torch": lat.torch}
    for k in METRICS:
        s = row[k]
        rec[f"{k}_mean"], rec[f"{k}_std"] = (s.mean, s.std) if s else (None, None)
    return rec


def write_csv(path: Path, columns: tuple[str, ...], records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in records:
            w.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in r.items()})


def write(result: CompareResult, directory: Path) -> list[Path]:
    """report.md, results.csv (the table's numbers), runs.csv (every run) and the plots; returns the files."""
    plots = {t.task: plot_task(t, rows(t), directory) for t in result.tasks}
    write_csv(directory / "results.csv", RESULT_COLUMNS, [row_record(t, r) for t in result.tasks for r in rows(t)])
    write_csv(directory / "runs.csv", RUN_COLUMNS, [run_record(m) for t in result.tasks for m in t.measurements])
    (directory / "report.md").write_text(markdown(result, plots))
    return sorted(directory.iterdir())
