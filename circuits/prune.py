"""Influence on the logits, pruning, and the graph's replacement/completeness scores.

Definitions of Ameisen et al. 2025 ("Circuit Tracing", section on graph pruning) as circuit-tracer
implements them: A_hat = |A| with rows normalised to sum 1; node influence
I = w A_hat + w A_hat^2 + ... (w: logit probabilities on the logit nodes; the series ends because
the graph is a DAG); keep the most influential nodes up to `node_threshold` of the total, then
the edges by A_hat'[t, s] (I'[t] + w[t]) up to `edge_threshold`; drop feature/error nodes left
without outgoing edges and features without incoming ones, until stable.

Unlike circuit-tracer we never build a dense square matrix: everything runs on the sparse edge
list (a scipy CSR matrix for the influence series), sums are in float64, and thresholds come
from one pass of log-spaced bin sums plus a sort of one bin, never a sort of all edge scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.graph import Graph
from interp.errors import ConfigError


@dataclass
class PruneResult:
    node_mask: Tensor  # [n_nodes] bool
    edge_mask: Tensor  # [nnz] bool, aligned with graph.edge_weight
    cumulative_scores: Tensor  # [n_nodes] cumulative-influence fraction at each node's rank
    influence: Tensor  # [n_nodes] raw node influence on the logits (float64)


def logit_weights(graph: Graph) -> Tensor:
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[graph.logit_start:] = graph.logit_probs.double()
    return w


def normalised(graph: Graph, keep: Tensor | None = None) -> Tensor:
    """|A| with rows summing to 1, over the edges in `keep` (all when None); float64."""
    return row_normalised(graph.n_nodes, graph.edge_target, graph.edge_weight, keep)


def row_normalised(n_nodes: int, tgt: Tensor, weight: Tensor,
                   keep: Tensor | None = None) -> Tensor:
    """|weight| divided by the sum of its target's row (edges outside `keep` count as 0)."""
    a = weight.double().abs()
    if keep is not None:
        a = torch.where(keep, a, torch.zeros_like(a))
    rowsum = torch.zeros(n_nodes, dtype=torch.float64).index_add_(0, tgt, a)
    return a / rowsum.clamp_min(1e-10)[tgt]


def csr_by_target(n_nodes: int, tgt: Tensor, src: Tensor, values: Tensor):
    """COO triples as a scipy CSR matrix [n_nodes, n_nodes] (rows: targets), float64."""
    import numpy as np
    from scipy.sparse import csr_matrix

    if tgt.numel() > 1 and not bool((tgt[1:] >= tgt[:-1]).all()):
        order = tgt.argsort(stable=True)  # graphs we build are sorted; loaded ones may not be
        tgt, src, values = tgt[order], src[order], values[order]
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(tgt.numpy(), minlength=n_nodes), out=indptr[1:])
    return csr_matrix((values.double().numpy(), src.numpy(), indptr), shape=(n_nodes, n_nodes))


def influence(graph: Graph, a_hat: Tensor, w: Tensor, max_iter: int = 10_000) -> Tensor:
    """w A + w A^2 + ... on the sparse edge list (exactly nilpotent: a DAG)."""
    A = csr_by_target(graph.n_nodes, graph.edge_target, graph.edge_source, a_hat)
    return series(A, w, max_iter)


def series(A, w: Tensor, max_iter: int = 10_000) -> Tensor:
    """w A + w A^2 + ... for a scipy CSR matrix A of a DAG (rows: targets): each term is one
    sparse product A^T x (scipy's compiled kernel, float64)."""
    A_T = A.T  # a CSC view: the product needs no conversion
    total = torch.zeros(A.shape[0], dtype=torch.float64).numpy()
    cur = w.double().numpy()
    for _ in range(max_iter):
        cur = A_T @ cur
        if not cur.any():
            return torch.from_numpy(total)
        total += cur
    raise RuntimeError("Influence did not vanish: the graph has a cycle.")


def partial_influence(n_nodes: int, tgt: Tensor, src: Tensor, weight: Tensor,
                      w: Tensor) -> Tensor:
    """Node influence on the logits from the rows computed so far (circuit-tracer's ranking for
    influence-first exploration): |A| row-normalised over the known rows, then the series."""
    return series(csr_by_target(n_nodes, tgt, src, row_normalised(n_nodes, tgt, weight)), w)


def threshold_value(scores: Tensor, fraction: float, band: int = 65_536) -> Tensor:
    """circuit-tracer's `find_threshold` without a full sort: the largest score v such that the
    scores >= v reach `fraction` of the total. One pass sums the scores into log-spaced bins,
    the bin where the running total from the top crosses the target is found, and only the
    scores in that bin are sorted (`band` bins; ties stay in one bin)."""
    s = scores.double()
    if s.numel() == 0:
        return torch.tensor(0.0, dtype=torch.float64)
    target = fraction * float(s.sum())
    hi = float(s.max())
    if float(s[s >= hi].sum()) >= target or hi <= 0:
        return torch.tensor(hi, dtype=torch.float64)
    pos = s[s > 0]
    lo = float(pos.min())
    n_bins = max(1, min(band, pos.numel()))
    span = math.log(hi) - math.log(lo)
    if span > 0:  # bin 0 holds the largest scores
        b = ((math.log(hi) - pos.log()) * ((n_bins - 1) / span)).floor().long()
        b.clamp_(0, n_bins - 1)
    else:
        b = torch.zeros(pos.numel(), dtype=torch.long)
    cum = torch.bincount(b, weights=pos, minlength=n_bins).cumsum(0)
    j = min(int(torch.searchsorted(cum, torch.tensor(target, dtype=torch.float64))), n_bins - 1)
    above = float(cum[j - 1]) if j > 0 else 0.0
    cand = pos[b == j].sort(descending=True).values
    k = int(torch.searchsorted(above + cand.cumsum(0), torch.tensor(target, dtype=torch.float64)))
    if k < cand.numel():
        return cand[k]
    return pos[b > j].max() if bool((b > j).any()) else s.min()


def prune_graph(graph: Graph, node_threshold: float = 0.8,
                edge_threshold: float = 0.98) -> PruneResult:
    """Node and edge masks keeping `node_threshold` / `edge_threshold` of the influence."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {v}.")
    w = logit_weights(graph)
    node_inf = influence(graph, normalised(graph), w)
    node_mask = node_inf >= threshold_value(node_inf, node_threshold)
    node_mask[graph.token_start:] = True
    tgt, src = graph.edge_target, graph.edge_source
    keep = node_mask[tgt] & node_mask[src]
    a_hat = normalised(graph, keep)
    pruned_inf = influence(graph, a_hat, w) + w
    edge_scores = a_hat * pruned_inf[tgt]
    edge_mask = keep & (edge_scores >= threshold_value(edge_scores, edge_threshold))
    n_feat, tok = graph.n_features, graph.token_start
    kept = edge_mask.nonzero().flatten()  # iterate on the surviving edges only
    t_k, s_k = tgt[kept], src[kept]
    alive = torch.ones(kept.numel(), dtype=torch.bool)
    while True:
        old = node_mask.clone()
        alive &= node_mask[t_k] & node_mask[s_k]
        has_out = torch.zeros(graph.n_nodes, dtype=torch.bool)
        has_out[s_k[alive]] = True
        has_in = torch.zeros(graph.n_nodes, dtype=torch.bool)
        has_in[t_k[alive]] = True
        node_mask[:tok] &= has_out[:tok]
        node_mask[:n_feat] &= has_in[:n_feat]
        if bool((node_mask == old).all()):
            break
    alive &= node_mask[t_k] & node_mask[s_k]
    edge_mask = torch.zeros_like(edge_mask)
    edge_mask[kept[alive]] = True
    order = node_inf.sort(descending=True)
    cum = order.values.cumsum(0) / order.values.sum().clamp_min(1e-300)
    cumulative = torch.zeros_like(node_inf)
    cumulative[order.indices] = cum
    return PruneResult(node_mask, edge_mask, cumulative, node_inf)


def graph_scores(graph: Graph) -> dict[str, float]:
    """Replacement score (token influence over token + error influence) and completeness score
    (influence-weighted fraction of each node's normalised input not from error nodes)."""
    w = logit_weights(graph)
    a_hat = normalised(graph)
    inf = influence(graph, a_hat, w)
    tok = float(inf[graph.token_start:graph.logit_start].sum())
    err = float(inf[graph.error_start:graph.token_start].sum())
    src = graph.edge_source
    from_err = (src >= graph.error_start) & (src < graph.token_start)
    err_frac = torch.zeros(graph.n_nodes, dtype=torch.float64).index_add_(
        0, graph.edge_target, torch.where(from_err, a_hat, torch.zeros_like(a_hat)))
    out = inf + w
    completeness = float(((1 - err_frac) * out).sum() / out.sum())
    return {"replacement_score": tok / (tok + err) if tok + err > 0 else float("nan"),
            "completeness_score": completeness}
