"""Circuit recovery as a binary classifier over attention heads: pure functions, no model needed.

A head is a positive when the published circuit names it. An extracted circuit "predicts" the heads it kept.
Sweeping alpha traces an ROC curve: large alpha keeps little (near (0, 0)), small alpha keeps much.
"""
from __future__ import annotations

import math
from typing import Iterable

from models.types import BenchError

Head = tuple[int, int]


def _heads(heads: Iterable, n_layers: int, n_heads: int, what: str) -> set[Head]:
    out = {(int(l), int(h)) for l, h in heads}
    bad = sorted(x for x in out if not (0 <= x[0] < n_layers and 0 <= x[1] < n_heads))
    if bad:
        raise BenchError(f"{what} head {bad[0]} is outside a {n_layers}x{n_heads} model")
    return out


def tpr_fpr(kept_heads: Iterable, published: Iterable, n_layers: int, n_heads: int) -> tuple[float, float]:
    """(TPR, FPR) of the kept heads against the published ones, over all n_layers * n_heads heads.

    TPR = |kept ∩ published| / |published|; FPR = |kept \\ published| / |not published|.
    """
    kept = _heads(kept_heads, n_layers, n_heads, "a kept")
    truth = _heads(published, n_layers, n_heads, "a published")
    negatives = n_layers * n_heads - len(truth)
    if not truth or negatives == 0:
        raise BenchError("the published circuit must name some heads but not all of them")
    return len(kept & truth) / len(truth), len(kept - truth) / negatives


def roc_auc(points: Iterable[tuple[float, float]]) -> float:
    """Area under the ROC curve through the (FPR, TPR) points plus (0, 0) and (1, 1), by the trapezoid rule.

    The points are sorted by FPR (then TPR), so the order of the sweep does not matter.
    """
    pts = [(float(f), float(t)) for f, t in points]
    for f, t in pts:
        if not (math.isfinite(f) and math.isfinite(t) and 0 <= f <= 1 and 0 <= t <= 1):
            raise BenchError(f"ROC point (FPR {f}, TPR {t}) is not inside [0, 1] x [0, 1]")
    curve = sorted({(0.0, 0.0), (1.0, 1.0), *pts})
    return sum((f1 - f0) * (t0 + t1) / 2 for (f0, t0), (f1, t1) in zip(curve, curve[1:]))
