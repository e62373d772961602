"""Run directories: refuse to clobber, write into a partial directory, publish it whole at the end."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from models.types import BenchError


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
