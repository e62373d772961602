"""Run records: a `bench extract` run without its weights, small enough to keep in git, and the run rebuilt from one.

An extraction's pruned model is a function of the base model, the circuit and the constants that replace what was
removed. `save` keeps every file of the run but the pruned weights (circuit.json, constants.safetensors, metrics,
config, splits, search steps, TensorBoard); of the weights it keeps the few that surgery computes rather than copies
(each layer's attn_bias and mlp_const, in folded.safetensors, as another CPU's matmul could round them otherwise),
and the SHA-256 of the whole file, in record.json. `restore` copies the record back, prunes the base model again on
the run's own device and dtype, checks that the folded constants it computes agree with the kept ones (to float
rounding), puts the kept ones in, and checks the weights against the hash, bit for bit: a restored run is the run,
for `bench compare`, `bench evaluate` and `bench distill --match`.
A distilled student is trained weights, a function of nothing small, so distill runs have no record.

Usage: python -m bench.tools.record save RUN RECORD
       python -m bench.tools.record restore RECORD RUN
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bench.core.rundir import CIRCUIT, METRICS, RunDir, publishing, write_json
from models import loading
from models.io import CONSTANTS, WEIGHTS, load_means, save_pruned
from models.pruned import CONSTANTS as FOLDED_NAMES
from models.surgery import prune
from models.types import BenchError, read_json

FORMAT = "circuit-bench/record-v1"
RECORD = "record.json"
PRUNED = Path("pruned") / WEIGHTS  # the one file a record leaves out
FOLDED = "folded.safetensors"  # of its tensors, the ones surgery computes


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finished_extract(run: Path) -> None:
    """One BenchError line if `run` is not a finished `bench extract` run with its weights."""
    config = RunDir(run).config()
    if config.get("command") != "extract":
        raise BenchError(f"{run} is not a `bench extract` run; only extractions have records (a distilled "
                         "student's weights are not a function of anything smaller)")
    for need in (METRICS, CIRCUIT, CONSTANTS, str(PRUNED)):
        if not (run / need).is_file():
            raise BenchError(f"{run} has no {need}: the run is unfinished or incomplete; finish it first")


def save(run: Path, record: Path) -> Path:
    """Copy `run` to `record`, all but the pruned weights; of those, keep the folded constants and the hash."""
    _finished_extract(run)
    with publishing(record, overwrite=False) as part:  # refuses a non-empty `record`: never replaced silently
        shutil.copytree(run, part, dirs_exist_ok=True, ignore=lambda d, names: [
            n for n in names if Path(d) == run / PRUNED.parent and n == PRUNED.name])
        with safe_open(str(run / PRUNED), "pt") as f:  # the folded tensors alone, not the whole file
            save_file({k: f.get_tensor(k) for k in f.keys() if k.endswith(FOLDED_NAMES)}, part / FOLDED)
        write_json(part / RECORD, {"format": FORMAT, "weights": str(PRUNED), "sha256": sha256(run / PRUNED)})
    return record


@torch.no_grad()
def rebuild(run: Path, config: dict, folded: dict[str, torch.Tensor]) -> None:
    """Write run/pruned/ again: the base model pruned by the run's circuit, with its constants, and with `folded`
    as its folded constants once they agree with the ones computed here."""
    a = config["args"]
    device, dtype = loading.resolve_device(a["device"]), loading.resolve_dtype(a["dtype"])
    model, _ = loading.load_model(a["model"], device=device, dtype=dtype)
    circuit = RunDir(run).circuit()
    means = load_means(run / CONSTANTS).to(device, dtype)
    pruned = prune(model, circuit.removed(), means, meta={"task": a["task"], "model": a["model"]})
    mine = {k: v for k, v in pruned.named_buffers() if k.endswith(FOLDED_NAMES)}
    if mine.keys() != folded.keys() or not all(torch.allclose(v.cpu(), folded[k], rtol=1e-4, atol=1e-5)
                                               for k, v in mine.items()):
        raise BenchError(f"the weights rebuilt from {run.name}'s record differ from the run's: its circuit or "
                         "constants changed, or another base model; re-run the extraction instead")
    for k, v in mine.items():
        v.copy_(folded[k])
    save_pruned(pruned, run / PRUNED.parent, circuit=circuit.to_dict())


def restore(record: Path, run: Path) -> Path:
    """Rebuild the run `record` was saved from, at `run`; one BenchError line if its weights come out different."""
    meta = read_json(record / RECORD)
    if meta.get("format") != FORMAT:
        raise BenchError(f"{record / RECORD} is not a circuit-bench run record")
    config = RunDir(record).config()
    with publishing(run, overwrite=False) as part:
        shutil.copytree(record, part, dirs_exist_ok=True, ignore=lambda d, names: [RECORD, FOLDED]
                        if Path(d) == record else [])
        rebuild(part, config, load_file(record / FOLDED))
        if sha256(part / PRUNED) != meta["sha256"]:
            raise BenchError(f"the weights rebuilt from {record} differ from the run's: another base model or "
                             "another torch; re-run the extraction instead")
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools.record", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for verb, what, src, dst in (("save", "keep a finished extraction run, without its weights", "RUN", "RECORD"),
                                 ("restore", "rebuild a run from its record", "RECORD", "RUN")):
        q = sub.add_parser(verb, help=what)
        q.add_argument("src", metavar=src)
        q.add_argument("dst", metavar=dst)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    src, dst = Path(args.src), Path(args.dst)
    try:
        if not src.is_dir():
            raise BenchError(f"{src} is not a directory")
        done = (save if args.verb == "save" else restore)(src, dst)
    except BenchError as e:
        p.exit(2, f"error: {e}\n")
    print(f"{args.verb}d {src} -> {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
