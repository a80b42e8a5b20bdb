"""Plotly views of attribution graphs (offline: plotly only, no CDN scripts as circuit-tracer's
viewer needs). Layers go up, prompt positions go across; edges are drawn by |weight|, blue for
positive and red for negative; node size follows influence."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from circuits.graph import Graph
from circuits.prune import PruneResult, prune_graph


def _coords(graph: Graph, nodes: list[int]) -> dict[int, tuple[float, float]]:
    """x = position (+ a small spread inside the cell), y = layer (tokens -1, logits L)."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i in nodes:
        kind = graph.node_kind(i)
        if kind == "feature":
            cell = (int(graph.feat_layer[i]), int(graph.feat_pos[i]))
        elif kind == "error":
            cell = divmod(i - graph.error_start, graph.n_pos)
        elif kind == "token":
            cell = (-1, i - graph.token_start)
        else:
            cell = (graph.n_layers, graph.n_pos - 1)
        cells.setdefault(cell, []).append(i)
    xy = {}
    for (layer, pos), members in cells.items():
        k = len(members)
        for j, i in enumerate(members):
            off = 0.0 if k == 1 else (j / (k - 1) - 0.5) * 0.7
            xy[i] = (pos + off, layer + (0.25 if graph.node_kind(i) == "error" else 0.0))
    return xy


def _label(graph: Graph, i: int) -> str:
    kind = graph.node_kind(i)
    if kind == "feature":
        return (f"feature L{int(graph.feat_layer[i])} #{int(graph.feat_index[i])} at "
                f"{int(graph.feat_pos[i])} ({graph.token_strs[int(graph.feat_pos[i])]!r}), "
                f"act {float(graph.activation[i]):.3g}")
    if kind == "error":
        layer, pos = divmod(i - graph.error_start, graph.n_pos)
        return f"MLP error L{layer} at {pos} ({graph.token_strs[pos]!r})"
    if kind == "token":
        pos = i - graph.token_start
        return f"token {graph.token_strs[pos]!r} at {pos}"
    k = i - graph.logit_start
    return f"logit {graph.logit_strs[k]!r} p={float(graph.logit_probs[k]):.3f}"


def fig_graph(graph: Graph, pruned: PruneResult | None = None, node_threshold: float = 0.8,
              edge_threshold: float = 0.98, max_edges: int = 2000,
              title: str | None = None) -> go.Figure:
    """The pruned graph: nodes by (position, layer), the `max_edges` strongest kept edges."""
    pr = pruned or prune_graph(graph, node_threshold, edge_threshold)
    nodes = pr.node_mask.nonzero().flatten().tolist()
    xy = _coords(graph, nodes)
    em = pr.edge_mask.nonzero().flatten()
    w = graph.edge_weight[em]
    if len(em) > max_edges:
        em = em[w.abs().topk(max_edges).indices]
        w = graph.edge_weight[em]
    fig = go.Figure()
    wmax = float(w.abs().max()) if len(w) else 1.0
    for sign, colour in ((1, "rgba(31,119,180,{a})"), (-1, "rgba(214,39,40,{a})")):
        for lo, hi, width in ((0.0, 0.1, 0.6), (0.1, 0.4, 1.5), (0.4, 1.01, 3.0)):
            xs, ys = [], []
            for e, wt in zip(em.tolist(), w.tolist()):
                r = abs(wt) / wmax
                if (wt > 0) != (sign > 0) or not lo <= r < hi:
                    continue
                s, t = int(graph.edge_source[e]), int(graph.edge_target[e])
                if s in xy and t in xy:
                    xs += [xy[s][0], xy[t][0], None]
                    ys += [xy[s][1], xy[t][1], None]
            if xs:
                fig.add_trace(go.Scatter(
                    x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                    line=dict(width=width, color=colour.format(a=0.25 + 0.5 * hi))))
    kinds = {"feature": ("circle", "#444"), "error": ("diamond", "#999"),
             "token": ("square", "#2ca02c"), "logit": ("star", "#ff7f0e")}
    inf = pr.influence
    scale = float(inf.max()) if float(inf.max()) > 0 else 1.0
    for kind, (symbol, colour) in kinds.items():
        members = [i for i in nodes if graph.node_kind(i) == kind]
        if not members:
            continue
        size = [8 + 16 * float(inf[i]) / scale if kind != "logit" else
                8 + 20 * float(graph.logit_probs[i - graph.logit_start]) for i in members]
        fig.add_trace(go.Scatter(
            x=[xy[i][0] for i in members], y=[xy[i][1] for i in members], mode="markers",
            name=kind, marker=dict(symbol=symbol, color=colour, size=size,
                                   line=dict(width=0.5, color="white")),
            text=[_label(graph, i) for i in members], hoverinfo="text"))
    L = graph.n_layers
    fig.update_layout(
        title=title or f"Attribution graph: {graph.prompt[:60]!r}",
        xaxis=dict(tickmode="array", tickvals=list(range(graph.n_pos)),
                   ticktext=graph.token_strs, title="position"),
        yaxis=dict(tickmode="array", tickvals=[-1, *range(L), L],
                   ticktext=["emb", *[str(i) for i in range(L)], "logit"], title="layer"),
        template="plotly_white", height=max(420, 40 * (L + 2)), legend=dict(orientation="h"))
    return fig


def fig_influence(graph: Graph, pruned: PruneResult | None = None) -> go.Figure:
    """Cumulative influence curve: how many nodes carry how much of the logits' influence."""
    pr = pruned or prune_graph(graph)
    vals = pr.influence[: graph.logit_start].sort(descending=True).values
    cum = (vals.cumsum(0) / vals.sum().clamp_min(1e-300)).tolist()
    fig = go.Figure(go.Scatter(x=list(range(1, len(cum) + 1)), y=cum, mode="lines"))
    fig.update_layout(xaxis=dict(type="log", title="nodes, most influential first"),
                      yaxis=dict(title="cumulative influence fraction", range=[0, 1.02]),
                      template="plotly_white", title="Influence on the logits")
    return fig


def fig_layer_counts(graph: Graph, pruned: PruneResult | None = None) -> go.Figure:
    """Active and kept features per layer."""
    pr = pruned or prune_graph(graph)
    L = graph.n_layers
    active = torch.bincount(graph.feat_layer, minlength=L).tolist()
    kept = torch.bincount(graph.feat_layer[pr.node_mask[: graph.n_features]], minlength=L).tolist()
    fig = go.Figure([go.Bar(x=list(range(L)), y=active, name="active"),
                     go.Bar(x=list(range(L)), y=kept, name="kept after pruning")])
    fig.update_layout(barmode="group", xaxis_title="layer", yaxis_title="features",
                      template="plotly_white", title="Features per layer")
    return fig


def fig_replacement_quality(report: dict | list[dict], names: list[str] | None = None
                            ) -> go.Figure:
    """Per-layer NMSE (left) and the replacement score, completeness score and top-1 agreement
    (right, KL in the legend) of one or more `circuits.quality.replacement_quality` reports,
    side by side (e.g. a PLT and a CLT set)."""
    from plotly.subplots import make_subplots

    reports = [report] if isinstance(report, dict) else list(report)
    names = names or [r.get("transcoders") or f"set {j}" for j, r in enumerate(reports)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=("normalised MSE of the MLP outputs per layer",
                                        "graph and replacement-model scores"))
    keys = [("replacement_score", "replacement"), ("completeness_score", "completeness"),
            ("top1_agreement", "top-1 agreement")]
    for j, (r, name) in enumerate(zip(reports, names)):
        colour = _PALETTE[j % len(_PALETTE)]
        layers = sorted(r["nmse"], key=int)
        fig.add_trace(go.Bar(x=[int(x) for x in layers], y=[r["nmse"][x] for x in layers],
                             name=name, marker_color=colour, legendgroup=name), row=1, col=1)
        fig.add_trace(go.Bar(x=[label for k, label in keys],
                             y=[r[k] if r.get(k) is not None else 0.0 for k, _ in keys],
                             name=f"{name}: KL last {r['kl_last']:.3g}, all {r['kl_all']:.3g}",
                             marker_color=colour, legendgroup=name, showlegend=True),
                      row=1, col=2)
    fig.update_yaxes(title_text="NMSE", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="layer", row=1, col=1)
    fig.update_layout(barmode="group", template="plotly_white", height=420,
                      title=f"Replacement quality over {reports[0]['n_prompts']} prompts",
                      legend=dict(orientation="h"))
    return fig


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
