"""`bench sweep`: Algorithm 1 at several alphas on one loaded model, as in the paper's Figures 1-2.

The model, the prompts and the patching means are loaded once; each alpha then runs Algorithm 1 from scratch
(fast engine), truly prunes and scores the circuit on the test split. On GPT-2 small the kept heads are also
scored against the published circuit of the task (`models.published`): TPR/FPR per alpha and the ROC AUC.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.core.pipeline import (ExtractArgs, Prepared, SearchOptions, build_cost, evaluate_models, log_final,
                                 prepare, search_circuit, tb_logger, templates)
from bench.core.fitting import fit_means
from bench.core.rundir import RunDir, check_out, default_dir, publishing, write_json
from models import published
from models.pruned import count_params_of
from models.roc import roc_auc, tpr_fpr
from models.surgery import prune, pruned_config
from models.types import BenchError, Circuit

COLUMNS = ("alpha", "kept_heads", "kept_mlps", "non_embedding_params", "pct_of_full", "test_accuracy",
           "heldout_accuracy", "test_kl_to_full", "heldout_kl_to_full", "search_wall_s", "forwards", "fit_wall_s",
           "build_macs")
SCORE_COLUMNS = ("test_score", "test_score_gain", "heldout_score", "heldout_score_gain")  # tasks with a score
ROC_COLUMNS = ("tpr", "fpr")
PLOTS = ("size_vs_alpha.png", "accuracy_vs_size.png")


@dataclass
class SweepArgs(SearchOptions):
    """Extract circuits at several alphas (model, prompts and means loaded once) and plot size and accuracy.

    Args:
        alphas: KL thresholds, each run from scratch (e.g. --alphas 0.001 0.01 0.1); sorted ascending.
        out: the sweep directory (default runs/sweep-TASK-MODEL-ABLATION-sSEED-HASH).
    """

    alphas: list[float]
    out: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.alphas = check_alphas(self.alphas)

    @property
    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        model = Path(self.model).name or self.model
        return default_dir(f"sweep-{self.task}-{model}-{self.ablation}-s{self.seed}", self)

    def extract_args(self, alpha: float) -> ExtractArgs:
        """The `bench extract` arguments of one alpha of the sweep (fast engine)."""
        shared = {f.name: getattr(self, f.name) for f in fields(SearchOptions)}
        return ExtractArgs(alpha=alpha, engine="fast", **shared)


def check_alphas(alphas) -> list[float]:
    """Finite, >= 0, distinct alphas, sorted ascending; anything else -> BenchError."""
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__iter__"):
        raise BenchError(f"--alphas must be a list of numbers, got {alphas!r}")
    try:
        values = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise BenchError(f"--alphas must be numbers, got {list(alphas)!r}") from None
    if not values:
        raise BenchError("--alphas is empty; give at least one alpha, e.g. --alphas 0.001 0.01 0.1")
    for a in values:
        if not (math.isfinite(a) and a >= 0):
            raise BenchError(f"every --alphas value must be a finite number >= 0, got {a}")
    if len(set(values)) != len(values):
        raise BenchError(f"--alphas repeats a value: {values}")
    return sorted(values)


@dataclass(frozen=True)
class Loaded(Prepared):
    """What every alpha of the sweep shares, loaded once, and the published circuit to score against."""

    truth: published.PublishedCircuit | None


def load(args: SweepArgs) -> Loaded:
    p = prepare(args)
    return Loaded(**vars(p), truth=published.for_model(p.model.config, args.task))


def alpha_dir(alpha: float) -> str:
    return f"alpha-{alpha!r}"  # repr: distinct floats get distinct names


def run_alpha(args: SweepArgs, ctx: Loaded, alpha: float, run: Path, full_params: dict) -> tuple[dict, dict]:
    """Algorithm 1 at one alpha from scratch; writes its circuit.json (and TensorBoard log). (row, full metrics)."""
    where = run / alpha_dir(alpha)
    where.mkdir()
    one = args.extract_args(alpha)
    logger = tb_logger(where, {**asdict(one), "out": str(where), "device": str(ctx.device)})
    search, wall = search_circuit(one, ctx.model, ctx.dm, ctx.means, logger)
    s = ctx.shape
    circuit = Circuit.from_removed(
        set(search.removed), model=args.model, task=args.task, alpha=alpha, ablation=args.ablation,
        include_mlps=args.include_mlps, seed=args.seed, n_layers=s.n_layers, n_heads=s.n_heads)
    RunDir(where).write_circuit(circuit)
    fitted, fit = fit_means(ctx.model, ctx.task, ctx.tokenizer, ctx.dm, frozenset(search.removed), ctx.means, one.fit,
                            args.seed, logger)
    pruned = prune(ctx.model, search.removed, fitted, meta={"task": args.task, "model": args.model})
    m = evaluate_models(ctx.task, ctx.tokenizer, ctx.model, pruned, ctx.dm, full_params, args.n_offtemplate)
    log_final(logger, m, len(search.order))
    p = m["pruned"]
    row = {"alpha": alpha, "kept_heads": len(circuit.heads), "kept_mlps": len(circuit.mlps),
           "non_embedding_params": p["non_embedding"],
           "pct_of_full": 100 * p["non_embedding"] / full_params["non_embedding"],
           "test_accuracy": p["test_accuracy"], "heldout_accuracy": p["heldout_accuracy"],
           "test_kl_to_full": p["test_kl_to_full"], "heldout_kl_to_full": p["heldout_kl_to_full"],
           **{k: p[k] for k in SCORE_COLUMNS if k in p},
           "search_wall_s": wall, "forwards": search.scorer.forwards, "fit_wall_s": fit["wall_s"],
           "build_macs": build_cost(one.engine, s, ctx.dm.patching, ctx.task.n_new(ctx.tokenizer), ctx.dm.val,
                                    search, fit)["macs"]}
    if ctx.truth is not None:
        row["tpr"], row["fpr"] = tpr_fpr(circuit.heads, ctx.truth.heads, s.n_layers, s.n_heads)
    return row, m["full"]


def sweep(args: SweepArgs) -> Path:
    """Run `bench sweep`; returns the published sweep directory."""
    out = args.out_dir
    check_out(out, args.overwrite)  # before the slow parts
    ctx = load(args)
    full_params = count_params_of(pruned_config(ctx.model, (), ctx.means))
    log = Console(stderr=True, highlight=False)
    with publishing(out, args.overwrite) as run:
        rows, full = [], None
        for alpha in args.alphas:
            row, full = run_alpha(args, ctx, alpha, run, full_params)
            rows.append(row)
            log.print(f"alpha={alpha:g}: kept {row['kept_heads']} heads, {row['kept_mlps']} MLPs, "
                      f"{row['pct_of_full']:.1f}% of the parameters, test accuracy {row['test_accuracy']:.1%}, "
                      f"held-out templates {row['heldout_accuracy']:.1%}")
        result = summarise(args, ctx, rows, full)
        write_results(run, args, result)
        plot_all(run, result)
    return out


def summarise(args: SweepArgs, ctx: Loaded, rows: list[dict], full: dict) -> dict:
    result = {"command": "sweep", "task": args.task, "model": args.model, "ablation": args.ablation,
              "include_mlps": args.include_mlps, "seed": args.seed, "device": str(next(ctx.model.parameters()).device),
              "n_layers": ctx.shape.n_layers, "n_heads": ctx.shape.n_heads,
              "full": {"non_embedding_params": full["non_embedding"], "test_accuracy": full["test_accuracy"],
                       "heldout_accuracy": full["heldout_accuracy"],
                       "kept_heads": ctx.shape.n_layers * ctx.shape.n_heads, "kept_mlps": ctx.shape.n_layers},
              "rows": rows, "published": None, "roc": None, "templates": templates(ctx.dm)}
    if ctx.truth is not None:
        points = [[r["fpr"], r["tpr"]] for r in rows]
        result["published"] = ctx.truth.to_dict()
        result["roc"] = {"points": points, "auc": roc_auc(points),
                         "note": "heads only; AUC by trapezoid over the points plus (0, 0) and (1, 1)"}
    return result


def write_results(run: Path, args: SweepArgs, result: dict) -> None:
    scored = SCORE_COLUMNS if result["rows"] and SCORE_COLUMNS[0] in result["rows"][0] else ()
    columns = COLUMNS + scored + (ROC_COLUMNS if result["roc"] else ())
    with open(run / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["rows"])
    result["plots"] = list(PLOTS) + (["roc.png"] if result["roc"] else [])
    write_json(run / "sweep.json", result)
    RunDir(run).write_config("sweep", asdict(args), templates=result["templates"])


# ---- plots (matplotlib's object API: no pyplot, no global backend state) -----------------------------------

def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), layout="constrained")
    return fig, fig.subplots()


def _title(result: dict) -> str:
    return f"{result['task']} on {Path(result['model']).name or result['model']} ({result['ablation']} ablation)"


def plot_size_vs_alpha(result: dict, path: Path) -> None:
    """Figure 1: non-embedding parameters (and % of the full model) against alpha."""
    rows, full = result["rows"], result["full"]["non_embedding_params"]
    alphas = [r["alpha"] for r in rows]
    fig, ax = _figure()
    ax.plot(alphas, [r["non_embedding_params"] for r in rows], marker="o")
    positive = [a for a in alphas if a > 0]
    if positive and len(positive) == len(alphas):
        ax.set_xscale("log")
    elif positive:
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.axhline(full, color="grey", linestyle="--", linewidth=1, label="full model")
    ax.secondary_yaxis("right", functions=(lambda p: 100 * p / full, lambda q: q * full / 100)).set_ylabel(
        "% of the full model")
    ax.set(xlabel="alpha (KL threshold)", ylabel="non-embedding parameters", title=_title(result))
    ax.legend(loc="best")
    fig.savefig(path, dpi=120)


def plot_accuracy_vs_size(result: dict, path: Path) -> None:
    """Figure 2: accuracy against size on the training templates' test split and on the held-out templates,
    each circuit labelled by its alpha, the full model for reference."""
    rows, full = result["rows"], result["full"]
    fig, ax = _figure()
    xs, ys = [r["non_embedding_params"] for r in rows], [r["test_accuracy"] for r in rows]
    ax.plot(xs, ys, marker="o", label="circuits, test (training templates)")
    ax.plot(xs, [r["heldout_accuracy"] for r in rows], marker="s", linestyle="--", color="C1",
            label="circuits, held-out templates")
    for r in rows:
        ax.annotate(f"α={r['alpha']:g}", (r["non_embedding_params"], r["test_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.scatter([full["non_embedding_params"]], [full["test_accuracy"]], marker="*", s=160, color="C3",
               label="full model, test", zorder=3)
    ax.scatter([full["non_embedding_params"]], [full["heldout_accuracy"]], marker="P", s=90, color="C2",
               label="full model, held-out", zorder=3)
    n = full["non_embedding_params"]
    ax.secondary_xaxis("top", functions=(lambda p: 100 * p / n, lambda q: q * n / 100)).set_xlabel(
        "% of the full model")
    ax.set_ylim(-0.03, 1.03)
    ax.set(xlabel="non-embedding parameters", ylabel="accuracy", title=_title(result))
    ax.legend(loc="best")
    fig.savefig(path, dpi=120)


def plot_roc(result: dict, path: Path) -> None:
    """The (FPR, TPR) of each alpha against the published heads, and the curve the AUC integrates."""
    roc = result["roc"]
    curve = sorted({(0.0, 0.0), (1.0, 1.0), *map(tuple, roc["points"])})
    fig, ax = _figure()
    ax.plot(*zip(*curve), color="C0", label=f"AUC {roc['auc']:.3f}")
    ax.scatter(*zip(*roc["points"]), color="C0", zorder=3)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="FPR (heads kept, not published)",
           ylabel="TPR (published heads kept)", title=f"circuit recovery: {_title(result)}")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=120)


def plot_all(run: Path, result: dict) -> None:
    plot_size_vs_alpha(result, run / "size_vs_alpha.png")
    plot_accuracy_vs_size(result, run / "accuracy_vs_size.png")
    if result["roc"]:
        plot_roc(result, run / "roc.png")


# ---- printing ----------------------------------------------------------------------------------------------

def print_sweep(result_dir: Path, console: Console) -> None:
    """One table row per alpha (and the full model), then the ROC AUC when the model is GPT-2 small."""
    r = json.loads((Path(result_dir) / "sweep.json").read_text())
    roc = r["roc"]
    t = Table(title=f"sweep: {r['task']} on {r['model']} ({r['ablation']} ablation)")
    cols = ["alpha", "heads", "MLPs", "non-emb. params", "test acc.", "held-out acc.", "test KL", "held-out KL",
            "search s"]
    for col in cols + (["TPR", "FPR"] if roc else []):
        t.add_column(col, justify="right")
    full = r["full"]
    t.add_row("full", str(full["kept_heads"]), str(full["kept_mlps"]), f"{full['non_embedding_params']:,} (100%)",
              f"{full['test_accuracy']:.1%}", f"{full['heldout_accuracy']:.1%}", "0", "0", "",
              *(["", ""] if roc else []))
    for row in r["rows"]:
        extra = [f"{row['tpr']:.2f}", f"{row['fpr']:.2f}"] if roc else []
        t.add_row(f"{row['alpha']:g}", str(row["kept_heads"]), str(row["kept_mlps"]),
                  f"{row['non_embedding_params']:,} ({row['pct_of_full']:.1f}%)", f"{row['test_accuracy']:.1%}",
                  f"{row['heldout_accuracy']:.1%}", f"{row['test_kl_to_full']:.4f}", f"{row['heldout_kl_to_full']:.4f}",
                  f"{row['search_wall_s']:.1f}", *extra)
    console.print(t)
    if roc:
        console.print(f"ROC AUC {roc['auc']:.3f} against the {r['published']['n_heads']} heads of "
                      f"{r['published']['citation']}")
    console.print(f"sweep: {result_dir}")
