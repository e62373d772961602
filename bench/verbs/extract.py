"""`bench extract`: Algorithm 1 on a task, true pruning, and a run directory with everything needed to reuse it."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.core.fitting import fit_means
from bench.core.pipeline import (ExtractArgs, build_cost, evaluate_models, log_final, prepare, search_circuit,
                                 searched_accuracy, tb_logger, template_bins, templates)
from bench.core.rundir import MODELS, SPLITS, RunDir, check_out, publishing
from models.ablation import Means
from models.io import CONSTANTS, save_means, save_pruned
from models.pruned import count_params_of
from models.search import Search
from models.surgery import prune, pruned_config
from models.types import Circuit
from tasks import get_task
from tasks.data import TaskDataModule

__all__ = ["ExtractArgs", "extract", "print_extract"]


def extract(args: ExtractArgs, data: type[TaskDataModule] = TaskDataModule) -> Path:
    """Run `bench extract`; returns the published run directory. `data` draws the splits (a TaskDataModule of
    another draw, for an experiment)."""
    out = args.out_dir
    check_out(out, args.overwrite)  # before the slow parts
    p = prepare(args, data=data)
    model, tokenizer, task, dm, means, shape, device = (p.model, p.tokenizer, p.task, p.dm, p.means, p.shape,
                                                         p.device)
    resolved = {**asdict(args), "out": str(out), "device": str(device)}  # what ran, not what was typed
    with publishing(out, args.overwrite) as run:
        logger = tb_logger(run, resolved)
        search, wall = search_circuit(args, model, dm, means, logger)
        circuit = Circuit.from_removed(
            set(search.removed), model=args.model, task=args.task, alpha=args.alpha, ablation=args.ablation,
            include_mlps=args.include_mlps, seed=args.seed, n_layers=shape.n_layers, n_heads=shape.n_heads)
        fitted, fit = fit_means(model, task, tokenizer, dm, frozenset(search.removed), means, args.fit, args.seed,
                                logger)
        pruned = prune(model, search.removed, fitted, meta={"task": args.task, "model": args.model})
        full_params = count_params_of(pruned_config(model, (), means))
        metrics = evaluate_models(task, tokenizer, model, pruned, dm, full_params, args.n_offtemplate)
        metrics["search"] = {"wall_s": wall, "forwards": search.scorer.forwards, "steps": len(search.steps),
                             "val_kl": search.kl, "engine": args.engine, "device": str(device), "dtype": args.dtype,
                             **searched_accuracy(task, tokenizer, model, search.removed, means, dm)}
        metrics["fit"] = fit
        metrics["build"] = build_cost(args.engine, shape, dm.patching, task.n_new(tokenizer), dm.val, search, fit)
        write_run(run, resolved, circuit, pruned, metrics, dm, search, fitted)
        log_final(logger, metrics, len(search.order))
    return out


def write_run(run: Path, args: dict, circuit: Circuit, pruned, metrics: dict, dm, search: Search,
              constants: Means) -> None:
    rd = RunDir(run)
    rd.write_circuit(circuit)
    save_means(constants, rd / CONSTANTS)
    rd.write_metrics(metrics)
    rd.write_config("extract", args, templates=templates(dm))
    dm.save(rd / SPLITS)
    names = template_bins(dm.task, dm.val)[1]  # what the bins of a per-template rule stand for
    rd.write_steps([{"index": st.index, "component": str(st.component), "kl": st.kl, "delta": st.delta,
                     "removed": st.removed, **({} if st.worst_bin is None else {"worst_template": names[st.worst_bin]})}
                    for st in search.steps])
    save_pruned(pruned, rd / MODELS[0], circuit=circuit.to_dict())


def print_extract(out, console: Console) -> None:
    rd = RunDir(out)
    m, c = rd.metrics(), rd.circuit().to_dict()
    full, pruned = m["full"], m["pruned"]
    t = Table(title=f"{c['task']} on {c['model']}  (alpha={c['alpha']}, {c['ablation']} ablation)")
    for col in ("", "non-emb. params", "test acc.", "held-out acc.", "test KL", "held-out KL"):
        t.add_column(col, justify="right")
    t.add_row("full", f"{full['non_embedding']:,}", f"{full['test_accuracy']:.1%}", f"{full['heldout_accuracy']:.1%}",
              "0", "0")
    cut = 1 - pruned["non_embedding"] / full["non_embedding"]
    t.add_row("circuit", f"{pruned['non_embedding']:,} (-{cut:.1%})", f"{pruned['test_accuracy']:.1%}",
              f"{pruned['heldout_accuracy']:.1%}", f"{pruned['test_kl_to_full']:.4f}",
              f"{pruned['heldout_kl_to_full']:.4f}")
    console.print(t)
    if "heldout_worst" in pruned:
        console.print("worst template against the full model: " + ", ".join(
            f"{w['template']} {w['delta_pts']:+.1f} pts ({w['accuracy']:.0%} vs {w['full_accuracy']:.0%})"
            for w in (pruned["test_worst"], pruned["heldout_worst"])) + " (test, held-out)")
    if "test_score" in pruned:
        name = get_task(c["task"]).score_name
        console.print(f"{name}, test / held-out (gain over another prompt's target): circuit "
                      f"{pruned['test_score']:.3f} / {pruned['heldout_score']:.3f} ({pruned['test_score_gain']:.3f} / "
                      f"{pruned['heldout_score_gain']:.3f}), full {full['test_score']:.3f} / "
                      f"{full['heldout_score']:.3f} ({full['test_score_gain']:.3f} / {full['heldout_score_gain']:.3f})")
    fit = m.get("fit") or {"steps": 0}
    fitted = f"; constants fitted in {fit['steps']} steps, {fit['wall_s']:.0f} s" if fit["steps"] else ""
    console.print(f"kept {len(c['heads'])} heads, {len(c['mlps'])} MLPs; search {m['search']['wall_s']:.0f} s{fitted}; "
                  f"run: {out}")
