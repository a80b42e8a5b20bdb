"""Attention splits: which frozen attention head carried an edge of an attribution graph.

In the local replacement model (`circuits.replacement`) attention patterns are frozen, so each
head is a fixed linear map (its OV circuit weighted by the frozen pattern) and an edge
A[t, s] = v_tᵀ J v_s is a sum over the linear paths from source s to target t. Every path either
crosses no attention head (it runs along the residual stream and the transcoders' skip paths)
or has a last head, the one closest to the target. Grouping the paths by that last head
(layer ℓ, head h) splits the edge exactly:

    A[t, s] = A_resid[t, s] + Σ_{ℓ, h} A_{ℓ,h}[t, s],

where A_{ℓ,h} is v_tᵀ J_{>ℓ, no attention} · OV_{ℓ,h} · J_{≤ℓ} v_s with J_{≤ℓ} the whole
frozen map below (every head included). This is the per-head decomposition asked for in
circuit-tracer #53 and used in Ameisen et al. 2025 ("Circuit Tracing", attention attribution)
to show which head moved information between positions; the terms sum to the unsplit edge
(tests/test_replacement_quality.py).

One target at a time: the adjoint carries 1 + L·H cotangents as one batch (the residual-only
one, which is split by head at each layer, and one per (layer, head) below its layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuits.graph import Graph
from circuits.replacement import ReplacementModel
from interp.errors import InterpError
from interp.models.adjoint import norm_weight_in


@dataclass
class HeadSplit:
    """Per-head terms of one target's incoming edges.

    `terms` [1 + L·H, n_sources]: row 0 the paths through no attention head, row 1 + ℓ·H + h the
    paths whose last head is (ℓ, h); columns the graph's source nodes [features | errors |
    tokens]. `terms.sum(0)` is the target's row of the graph."""

    target: int
    terms: Tensor
    n_heads: int

    def label(self, row: int) -> str:
        if row == 0:
            return "residual"
        layer, head = divmod(row - 1, self.n_heads)
        return f"L{layer}.H{head}"

    def edge(self, source: int, top: int | None = None) -> dict[str, float]:
        """The terms of the edge from `source`, largest |term| first (`top` of them)."""
        col = self.terms[:, source]
        order = col.abs().argsort(descending=True)
        order = order[col[order] != 0][:top]
        return {self.label(int(r)): float(col[r]) for r in order}


def _target(rm: ReplacementModel, graph: Graph, node: int) -> tuple[int, int, Tensor]:
    """(layer, position, read vector) of a graph target node (a feature or a logit)."""
    kind = graph.node_kind(node)
    if kind == "feature":
        layer, pos = int(graph.feat_layer[node]), int(graph.feat_pos[node])
        idx = graph.feat_index[node].reshape(1)
        return layer, pos, rm.tc.enc_rows(layer, idx)[0]
    if kind == "logit":
        W_U = rm.net.unembed
        tok = int(graph.logit_tokens[node - graph.logit_start])
        return rm.n_layers, rm.n_pos - 1, W_U[tok] - W_U.mean(0)
    raise InterpError(f"Node {node} is a {kind} node; only feature and logit nodes have "
                      "incoming edges to split by head.")


def _columns(rm: ReplacementModel, graph: Graph) -> Tensor:
    """For each graph source node, its column in `rm.backward`'s rows (-1: none)."""
    f = rm.features
    key = lambda lay, pos, idx: (lay * rm.n_pos + pos) * 10**9 + idx  # noqa: E731
    rm_keys = key(f.layer, f.pos, f.index)
    order = rm_keys.argsort()
    g_keys = key(graph.feat_layer, graph.feat_pos, graph.feat_index)
    at = torch.searchsorted(rm_keys[order], g_keys).clamp_max(max(len(f) - 1, 0))
    feat_cols = order[at] if len(f) else at
    if len(f) and not bool((rm_keys[feat_cols] == g_keys).all()):
        raise InterpError("The graph's features are not active in this replacement model; "
                          "split a graph with the replacement model it was made from.")
    nf = len(f)
    rest = torch.arange(nf, nf + rm.n_layers * rm.n_pos + rm.n_pos)
    return torch.cat([feat_cols, rest])


@torch.no_grad()
def split_by_head(rm: ReplacementModel, graph: Graph, target: int) -> HeadSplit:
    """The per-head terms of every incoming edge of `target` (a feature or logit node of
    `graph`, which was made from `rm`)."""
    net, adj = rm.net, rm.adjoint
    layer, pos, vec = _target(rm, graph, target)
    L, n, H = rm.n_layers, rm.n_pos, net.n_heads
    n_kv = net.n_kv_heads
    d = vec.shape[-1]
    P = pos + 1
    C = 1 + L * H
    nf = len(rm.features)
    rows = torch.zeros(C, rm.n_sources())
    Gd = torch.zeros(P, 1, d)  # cotangent along paths through no head yet
    Gh = torch.zeros(P, L * H, d)  # one per (layer, head): paths whose last head it is
    at = torch.tensor([pos])
    top = layer
    if layer == L:
        Gd[pos, 0] = adj.final_t(vec[None], at)[0]
        top = L - 1

    def read(i: int, G: Tensor, r: slice) -> None:
        e = torch.bmm(G, rm._read(i)[:P])  # [P, B, kmax + 1]
        if i in rm._dec:  # a CLT feature writes at several layers: its terms add up
            _, fpos, slot, fid = rm._dec[i]
            keep = fpos < P
            rows[r].index_add_(1, fid[keep], e[fpos[keep], :, slot[keep]].T)  # a view of rows
        err = nf + i * n
        rows[r, err + rm.first: err + P] = e[rm.first:, :, -1].T

    def split(i: int) -> None:
        """Layer i's attention adjoint of Gd, head by head, into Gh's columns of layer i."""
        blk, lay = net.blocks[i], adj.layer(i)
        g = norm_weight_in(Gd[:, 0], blk.post_attn)  # [P, d]
        gz = (g @ blk.attn.o).view(P, H, -1).transpose(0, 1)  # [H, q, dh]
        gv = torch.bmm(lay.AT[:, :P, :P], gz)  # [H, k, dh]
        V = lay.V.view(n_kv, -1, d)[torch.arange(H) // (H // n_kv)]  # [H, dh, d]
        Gh[:, i * H:(i + 1) * H] += torch.bmm(gv, V).transpose(0, 1)

    for i in range(top, -1, -1):
        blk = net.blocks[i]
        read(i, Gd, slice(0, 1))
        read(i, Gh, slice(1, C))
        md, mh = rm._skip_t(i, Gd, None), rm._skip_t(i, Gh, None)
        if blk.parallel:
            adj.attn_t(i, Gh)
            split(i)
        for G, m in ((Gd, md), (Gh, mh)):
            if m is not None:
                G += m
        if layer == i:
            Gd[pos, 0] += adj.ln2_t(i, vec[None], at)[0]
        if not blk.parallel:
            adj.attn_t(i, Gh)
            split(i)
    tok = nf + L * n
    for G, r in ((Gd, slice(0, 1)), (Gh, slice(1, C))):
        rows[r, tok: tok + P] = torch.bmm(G, rm.embeddings()[:P, :, None]).squeeze(-1).T
    return HeadSplit(target, rows[:, _columns(rm, graph)], H)
