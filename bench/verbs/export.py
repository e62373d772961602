"""`bench export`: write a run's standalone model (extracted circuit or distilled student) for serving outside this
project, as ONNX, as a torch.export program or as a Hugging Face model directory, and check the written model's
logits against ours."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from bench.core.rundir import RunDir, write_json
from models import loading
from models.generate import greedy
from models.hf_export import write_hf
from models.io import load_pruned
from models.pruned import PrunedModel
from models.types import BenchError
from tasks.data import Split

FORMATS = {"onnx": "model.onnx", "torch-export": "model.pt2", "hf": "hf"}
TOLERANCE = 1e-4  # fp32: the written model's logits against ours, max absolute difference


@dataclass
class ExportArgs:
    """Export a run's standalone model for serving: ONNX (onnxruntime, TensorRT, ...), a torch.export program
    (torch.export.load) or a Hugging Face model directory (AutoModelForCausalLM with trust_remote_code: generate,
    pipelines; position-free runs only). ONNX and torch.export take token ids (batch, positions), int64, and give
    the next-token logits at the last position (batch, vocab), or at every position with --no-last-only. The batch
    size is free; so is the length, within what the model takes (a per-position model: its own prompts' lengths).
    The written model is then run on the run's test prompts and its logits checked against ours.

    Args:
        run: a run directory written by `bench extract` or `bench distill`.
        format: onnx, torch-export or hf.
        out: the file (or, for hf, the directory) to write (default: RUN/export/model.onnx, model.pt2 or hf).
        last_only: output the last position's logits only (what every task here reads).
        overwrite: replace an existing --out.
    """

    run: str
    format: str = "onnx"
    out: str | None = None
    last_only: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise BenchError(f"--format {self.format} is not one of {', '.join(FORMATS)}")
        if not Path(self.run).is_dir():
            raise BenchError(f"--run {self.run} is not a directory; give a run written by `bench extract` or "
                             "`bench distill`")
        for path in (self.out_path, self.info_path):
            if path.exists() and not self.overwrite:
                raise BenchError(f"{path} exists; pass --overwrite or choose another --out")

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.run) / "export" / FORMATS[self.format]

    @property
    def info_path(self) -> Path:
        """The description beside the file: FILE.json."""
        return self.out_path.with_name(self.out_path.name + ".json")


class Serving(nn.Module):
    """The pruned model with the output chosen: ids (B, T) -> logits (B, V) or (B, T, V)."""

    def __init__(self, model: PrunedModel, last_only: bool):
        super().__init__()
        self.model, self.last_only = model, last_only

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids, last_only=self.last_only)


def lengths(model: PrunedModel) -> tuple[int, int]:
    """The input lengths the model takes: a per-position model its own range, any other up to its context."""
    cfg = model.cfg
    return (cfg.min_positions if cfg.positional else 1), cfg.n_positions


def dynamic_shapes(model: PrunedModel) -> dict:
    """Batch free (from 1); length free within `lengths` unless that range is one length."""
    lo, hi = lengths(model)
    shapes = {0: torch.export.Dim("batch", min=1, max=1 << 16)}
    if lo < hi:
        shapes[1] = torch.export.Dim("positions", min=lo, max=hi)
    return {"ids": shapes}


def write(module: Serving, ids: torch.Tensor, fmt: str, path: Path) -> None:
    """Trace `module` on the example `ids` and write it in `fmt`."""
    shapes = dynamic_shapes(module.model)
    try:
        if fmt == "onnx":
            torch.onnx.export(module, (ids,), str(path), dynamo=True, input_names=["ids"], output_names=["logits"],
                              dynamic_shapes=shapes, external_data=False, verbose=False)
        else:
            torch.export.save(torch.export.export(module, (ids,), dynamic_shapes=shapes), str(path))
    except ImportError as e:
        raise BenchError(f"--format {fmt} needs {e.name}: pip install onnx onnxscript onnxruntime") from None


def runner(fmt: str, path: Path):
    """The written file as a function ids (B, T) -> logits, run by onnxruntime or torch.export.load."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise BenchError("checking the ONNX file needs onnxruntime: pip install onnxruntime") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda ids: torch.from_numpy(session.run(None, {"ids": ids.numpy()})[0])
    program = torch.export.load(str(path)).module()
    return lambda ids: program(ids)


@torch.inference_mode()
def max_difference(module: Serving, fn, split: Split) -> float:
    """Largest |logit difference| between the written file and our model on the split's prompts, in batches of
    1 and 16 (two batch sizes, so a batch size baked into the file shows)."""
    ids = split.input_ids
    worst = 0.0
    for batch in [ids[:1], *ids.split(16)]:
        worst = max(worst, float((fn(batch) - module(batch)).abs().max()))
    return worst


def export(args: ExportArgs) -> dict:
    """Run `bench export`: write the file (beside a partial name until it passed the check) and its description."""
    run, out = RunDir(Path(args.run)), args.out_path
    model, manifest = load_pruned(run.model)  # fp32 on the CPU: what the check compares against
    test = run.split("test")
    if args.format == "hf":
        return export_hf(args, run, model, manifest, test)
    module = Serving(model, args.last_only).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        write(module, test.input_ids[:2], args.format, partial)
        diff = max_difference(module, runner(args.format, partial), test)
        if not diff <= TOLERANCE:
            raise BenchError(f"the exported model's logits differ from ours by {diff:.2e} (> {TOLERANCE:g}); "
                             "nothing was written. Please report it with the run directory")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    info = {"format": args.format, "file": out.name, "bytes": out.stat().st_size, "input": "ids", "output": "logits",
            "positions": list(lengths(model)), "last_only": args.last_only, "scheme": model.cfg.scheme,
            "checked_prompts": len(test), "max_abs_difference": diff, "manifest": manifest.get("circuit")
            or manifest.get("distill")}
    write_json(args.info_path, info)
    return {"path": str(out), **info}


def print_export(result: dict, console: Console) -> None:
    lo, hi = result["positions"]
    length = str(hi) if lo == hi else f"{lo}..{hi}"
    shape = "(batch, vocab)" if result["last_only"] else "(batch, positions, vocab)"
    console.print(f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB, {result['format']}): ids (batch, "
                  f"positions {length}) int64 -> logits {shape}; on {result['checked_prompts']} test prompts its "
                  f"logits are within {result['max_abs_difference']:.1e} of the pruned model's")


def export_hf(args: ExportArgs, run: RunDir, model: PrunedModel, manifest: dict, test: Split) -> dict:
    """The Hugging Face directory, written beside a partial name, loaded back with trust_remote_code and checked:
    logits at every position within TOLERANCE of ours, and the same greedy continuation."""
    task, name = hf_names(manifest)
    out, partial = args.out_path, args.out_path.with_name(f".{args.out_path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        write_hf(model, loading.load_tokenizer(name), partial, model_card(run, manifest, task, name, args))
        diff, same = check_hf(model, partial, test)
        if not (diff <= TOLERANCE and same):
            raise BenchError(f"the exported model differs from ours (logits by {diff:.2e}, greedy continuation "
                             f"{'the same' if same else 'not the same'}); nothing was written. Please report it")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    info = {"format": "hf", "file": out.name, "bytes": sum(f.stat().st_size for f in out.iterdir()),
            "input": "input_ids", "output": "logits", "positions": list(lengths(model)), "last_only": False,
            "scheme": model.cfg.scheme, "checked_prompts": len(test), "max_abs_difference": diff,
            "manifest": manifest.get("circuit") or manifest.get("distill")}
    write_json(args.info_path, info)
    return {"path": str(out), **info}


def hf_names(manifest: dict) -> tuple[str, str]:
    """(task, base model) of a run's standalone model: an extraction's circuit, or a student's provenance."""
    if manifest.get("circuit"):
        return manifest["circuit"]["task"], manifest["circuit"]["model"]
    info = manifest.get("distill") or {}
    if not {"task", "teacher"} <= set(info):
        raise BenchError("the run's model records neither a circuit nor a distillation; re-create the run")
    return info["task"], info["teacher"]


@torch.inference_mode()
def check_hf(model: PrunedModel, directory: Path, test: Split) -> tuple[float, bool]:
    """The directory loaded as a user would: the largest |logit difference| at every position over the test
    prompts (batches of 1 and 16), and whether 8 greedy tokens of `generate()` equal ours on two prompts."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(directory), trust_remote_code=True).eval()
    ids, worst = test.input_ids, 0.0
    for batch in [ids[:1], *ids.split(16)]:
        worst = max(worst, float((hf(batch).logits - model(batch)).abs().max()))
    prompt = ids[:2]
    ours = greedy(lambda x: model(x, last_only=True), prompt, 8)
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                         min_new_tokens=8)[:, prompt.shape[1]:]
    return worst, torch.equal(ours.cpu(), theirs.cpu())


def model_card(run: RunDir, manifest: dict, task: str, name: str, args: ExportArgs) -> str:
    """A short model card: what the model is, how well it does, and the commands that made and load it."""
    m = run.metrics()
    mine = m.get("pruned") or m.get("student") or {}
    full = m.get("full") or m.get("teacher") or {}
    c = manifest.get("circuit")
    what = (f"the {task} circuit of {name}: {len(c['heads'])} attention heads and {len(c['mlps'])} MLPs kept "
            f"(alpha {c['alpha']}, {c['ablation']} ablation), everything else truly pruned" if c else
            f"a student distilled from {name} on {task}")
    cut = 1 - mine.get("non_embedding", 0) / full["non_embedding"] if full.get("non_embedding") else None
    lines = [f"# {task} on {name}, pruned by circuit-bench", "", f"This model is {what}.", ""]
    if cut is not None:
        lines += [f"- non-embedding parameters: {mine['non_embedding']:,} ({cut:.1%} fewer than {name}'s)"]
    for split in ("test", "heldout"):
        if f"{split}_accuracy" in mine:
            lines.append(f"- accuracy on the {'test' if split == 'test' else 'held-out-template'} prompts: "
                         f"{mine[f'{split}_accuracy']:.1%} ({name}: {full.get(f'{split}_accuracy', float('nan')):.1%})")
    config = run.config()
    given = sorted(config["args"].items(), key=lambda kv: kv[0] != "task")  # the task first, as one types it
    made = f"bench {config['command']} " + " ".join(flag(k, v) for k, v in given if v is not None)
    lines += ["", "Made with:", "", f"    {made}", f"    bench export --run {args.run} --format hf", "",
              "Load it (torch and transformers are all it needs):", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'model = AutoModelForCausalLM.from_pretrained("{args.out_path.name}", trust_remote_code=True)',
              f'tokenizer = AutoTokenizer.from_pretrained("{args.out_path.name}")', "```", "",
              "It keeps a KV cache: each generated token costs one position.", ""]
    return "\n".join(lines)


def flag(name: str, value) -> str:
    """An option as typed: --name value, --name / --no-name for booleans."""
    key = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{key}" if value else f"--no-{key}"
    return f"--{key} {' '.join(map(str, value)) if isinstance(value, list) else value}"
