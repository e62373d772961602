"""`bench export`: write a run's standalone model (extracted circuit or distilled student) for serving outside this
project, as ONNX or as a torch.export program, and check the written file's logits against ours."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from bench.core.rundir import RunDir, write_json
from models.io import load_pruned
from models.pruned import PrunedModel
from models.types import BenchError
from tasks.data import Split

FORMATS = {"onnx": "model.onnx", "torch-export": "model.pt2"}
TOLERANCE = 1e-4  # fp32: the written model's logits against ours, max absolute difference


@dataclass
class ExportArgs:
    """Export a run's standalone model for serving: ONNX (onnxruntime, TensorRT, ...) or a torch.export program
    (torch.export.load). The input is token ids (batch, positions), int64; the output the next-token logits at the
    last position (batch, vocab), or at every position with --no-last-only. The batch size is free; so is the
    length, within what the model takes (a per-position model: its own prompts' lengths). The file is then run on
    the run's test prompts and its logits checked against ours.

    Args:
        run: a run directory written by `bench extract` or `bench distill`.
        format: onnx or torch-export.
        out: the file to write (default: RUN/export/model.onnx or RUN/export/model.pt2).
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
