"""Scoring a method's unit scores: faithfulness curves with MIB's CPR and CMD, and agreement
with a ground-truth circuit (ROC AUC, precision and recall).

Faithfulness of a circuit C (MIB, Mueller et al. 2025, arXiv 2504.13151):
    f(C) = (m(C) - m(empty)) / (m(M) - m(empty)),
with m the task metric, M the full model and the empty circuit everything ablated. The circuit
of size k is the k units with the largest |score| (MIB's `apply_topn(absolute=True)`), edges
pruned of dangling ends. Over the sizes k_i = int(p_i * N) for the fractions p_i of MIB's grid
(0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100%), trapezoids over p give
    CPR = sum_i (p_{i+1} - p_i) (f_i + f_{i+1}) / 2          (higher is better)
    CMD = sum_i (p_{i+1} - p_i) (|1 - f_i| + |1 - f_{i+1}|) / 2  (0 is best).
`grid="every"` uses every size k = 0..N (p = k / N) instead, for graphs with a handful of
components, where MIB's fractions round to few distinct sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuits.discovery.context import PatchContext
from interp.errors import ConfigError

MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class Curve:
    """A faithfulness curve: fractions p, sizes k (units requested), kept units after
    pruning, faithfulness f; with its CPR and CMD."""

    level: str
    fractions: list[float]
    sizes: list[int]
    kept: list[int]
    faithfulness: list[float]
    cpr: float
    cmd: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def fractions_for(n_units: int, grid: str | tuple = "mib") -> list[float]:
    if grid == "mib":
        return list(MIB_FRACTIONS)
    if grid == "every":
        return [k / n_units for k in range(n_units + 1)]
    if isinstance(grid, (tuple, list)):
        return [float(p) for p in grid]
    raise ConfigError(f"grid must be 'mib', 'every' or a list of fractions, not {grid!r}.")


def top_masks(scores: Float[Tensor, "n_units"], sizes: list[int]
              ) -> Bool[Tensor, "n_sizes n_units"]:
    """Masks of the top-k units by |score| (ties broken by index, stably) for each size k."""
    order = torch.sort(scores.abs(), descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return rank[None, :] < torch.tensor(sizes)[:, None]


def areas(fractions: list[float], f: list[float]) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 - f| over the fractions."""
    p = torch.tensor(fractions, dtype=torch.float64)
    y = torch.tensor(f, dtype=torch.float64)
    dx = p[1:] - p[:-1]
    cpr = float((dx * (y[1:] + y[:-1]) / 2).sum())
    cmd = float((dx * ((1 - y[1:]).abs() + (1 - y[:-1]).abs()) / 2).sum())
    return cpr, cmd


def faithfulness_curve(ctx: PatchContext, scores: Tensor, level: str,
                       grid: str | tuple = "mib") -> Curve:
    """The faithfulness of the top-k circuits over the grid of sizes, with CPR and CMD."""
    n = ctx.n_units(level)
    if scores.shape != (n,):
        raise ConfigError(f"Expected {n} {level} scores, got shape {tuple(scores.shape)}.")
    fractions = fractions_for(n, grid)
    sizes = [int(p * n + 1e-9) for p in fractions]
    masks = top_masks(scores, sizes)
    if level == "edge":
        masks = ctx.graph.prune(masks)
    f = ctx.faithfulness(masks, level).tolist()
    cpr, cmd = areas(fractions, f)
    return Curve(level, fractions, sizes, masks.sum(1).tolist(), f, cpr, cmd)


def roc_auc(scores: Float[Tensor, "n"], truth: Bool[Tensor, "n"]) -> float:
    """Area under the ROC curve of |scores| against a boolean ground truth: the probability
    that a random true unit outscores a random false one (ties count one half)."""
    s = scores.abs().double()
    t = truth.bool()
    pos, neg = s[t], s[~t]
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError("ROC AUC needs both circuit and non-circuit units in the truth.")
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def precision_recall(selected: Bool[Tensor, "n"], truth: Bool[Tensor, "n"]) -> dict:
    """Precision, recall and F1 of a selected set against the truth (the usual ones, not the
    TPR/TNR harmonic mean of O'Neill & Bui's code)."""
    s, t = selected.bool(), truth.bool()
    tp = int((s & t).sum())
    precision = tp / int(s.sum()) if s.any() else 0.0
    recall = tp / int(t.sum()) if t.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "selected": int(s.sum())}


def smallest_faithful(curve: Curve, scores: Tensor, threshold: float = 0.8) -> Bool[Tensor, "n"]:
    """The method's circuit: the top-k units for the smallest size on the curve whose
    faithfulness reaches `threshold` (all units if none does)."""
    k = next((s for s, f in zip(curve.sizes, curve.faithfulness) if f >= threshold),
             len(scores))
    return top_masks(scores, [k])[0]
