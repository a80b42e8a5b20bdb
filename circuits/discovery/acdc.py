"""ACDC: automatic circuit discovery by greedy edge pruning (Conmy et al. 2023, arXiv 2304.14997).

Start from the full graph. Visit the receiving nodes from the logits back to the first layer;
for each edge into a node, ablate it, and keep it ablated if the cost rises by less than a
threshold tau, where the cost is the KL divergence of the circuit's next-token distribution
from the full model's on the clean prompts (ACDC's default) or the normalised loss of the task
metric, 1 - f(C). Edges into a node that no kept edge leaves are removed without a forward
pass (they cannot change the output; ACDC would measure no change and remove them too).

ACDC gives a circuit per tau; a score per edge comes from a sweep: the largest tau of the grid
at which the edge survives (0 if it never does), and the circuit at the default tau is the
method's own selection. Thresholds are relative to the cost of the empty circuit, so one grid
serves tasks whose KL scales differ. At the node level (a model patched through hooks) the
units are components, visited from the last layer to the first.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from circuits.discovery.context import PatchContext
from circuits.discovery.result import MethodResult
from interp.errors import ConfigError

THRESHOLDS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def _order(ctx: PatchContext, level: str) -> list[int]:
    """Units in ACDC's visiting order: receivers from the output back, senders latest first."""
    g = ctx.graph
    if level == "node":
        return list(range(g.n_components))[::-1]
    return sorted(range(g.n_edges), key=lambda e: (-int(g.edge_dst[e]), g.edges[e][2],
                                                   -int(g.edge_src[e])))


def acdc_circuit(ctx: PatchContext, tau: float, cost, level: str) -> tuple[torch.Tensor, int]:
    """The circuit ACDC keeps at threshold `tau` (absolute) and the forward passes it took."""
    g = ctx.graph
    U = ctx.n_units(level)
    keep = torch.ones(U, dtype=torch.bool)
    current = cost(keep)
    passes = 1
    logits = len(g.nodes) - 1
    for u in _order(ctx, level):
        if level == "edge":
            dst = int(g.edge_dst[u])
            if dst != logits and not keep[g.edge_src == dst].any():
                keep[u] = False  # its receiver is dead: no effect on the output
                continue
        keep[u] = False
        new = cost(keep)
        passes += 1
        if new - current < tau:
            current = new
        else:
            keep[u] = True
    return keep, passes


def run(ctx: PatchContext, thresholds: tuple = THRESHOLDS, default: float = 0.01,
        cost: str = "kl") -> MethodResult:
    """ACDC over a grid of relative thresholds (see the module docstring)."""
    if cost not in ("kl", "metric"):
        raise ConfigError(f"ACDC cost must be 'kl' or 'metric', not {cost!r}.")
    t0 = time.perf_counter()
    level = ctx.level
    U = ctx.n_units(level)
    full_logp = F.log_softmax(ctx.logits(torch.ones(1, U), level)[0], -1)
    gap = ctx.full_metric - ctx.empty_metric

    def cost_of(keep: torch.Tensor) -> float:
        logits = ctx.logits(keep[None].float(), level)
        if cost == "kl":
            logp = F.log_softmax(logits[0], -1)
            return float((full_logp.exp() * (full_logp - logp)).sum(-1).mean())
        return float((ctx.full_metric - ctx.metric_fn(logits, ctx.batch).mean()) / gap)

    scale = cost_of(torch.zeros(U, dtype=torch.bool))
    grid = sorted(set(thresholds) | {default})
    scores = torch.zeros(U)
    selected_units, passes, sizes = None, 0, {}
    for rel in grid:
        keep, n = acdc_circuit(ctx, rel * scale, cost_of, level)
        passes += n
        scores[keep] = rel
        sizes[str(rel)] = int(keep.sum())
        if rel == default:
            selected_units = keep
    g = ctx.graph
    if level == "edge":
        per_node = torch.zeros(len(g.nodes))
        for e, sc in enumerate(scores.tolist()):  # a node scores its best edge, in or out
            for node in (int(g.edge_src[e]), int(g.edge_dst[e])):
                per_node[node] = max(float(per_node[node]), sc)
        comp = per_node[g.components]
        selected = g.components_touched(selected_units)
    else:
        comp, selected = scores, selected_units
    return MethodResult("acdc", level, scores, comp, time.perf_counter() - t0, selected=selected,
                        extra={"thresholds": grid, "default": default, "cost": cost,
                               "empty_cost": scale, "forward_passes": passes,
                               "circuit_sizes": sizes})
