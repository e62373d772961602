"""Run directories: distinct default names, refuse to clobber, write into a partial directory, publish it whole
at the end, and clear the partial directories of processes that are gone."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from models.types import BenchError


NOT_RESULTS = ("out", "overwrite", "batch_size", "cache_gb", "speculate")  # options that do not change the result


def default_dir(readable: str, args, skip: tuple[str, ...] = ()) -> Path:
    """runs/READABLE-HASH: the hash covers every option that can change the result, so two commands that differ
    in any of them (--no-include-mlps, --n-val, --dtype, ...) never share a default directory. `skip`: options
    a later command may change on the same directory (distill's --steps with --resume)."""
    options = {k: v for k, v in asdict(args).items() if k not in NOT_RESULTS + skip}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"{readable}-{digest}"


def clear_stale_partials(out: Path) -> None:
    """Remove `.NAME.partial-PID` directories beside `out` whose process no longer exists (killed runs)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_out(out: Path, overwrite: bool) -> None:
    """Fail before any work if `out` holds results and --overwrite was not given."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BenchError(f"--out {out} already holds results; pass --overwrite or choose another --out")


@contextmanager
def publishing(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh partial directory beside `out`; on success it replaces `out`, on failure it is removed."""
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_partials(out)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_report(text: str, rows: list, out: str | None) -> None:
    """A check's markdown report printed, and with `out` also written there, its rows as JSON beside it."""
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)
