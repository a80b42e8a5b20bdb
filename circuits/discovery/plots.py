"""Figures of circuit-discovery runs: each `fig_*` takes plain data (a run's report.json
entries) and returns a plotly Figure, used unchanged by notebooks and the explorer."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def fig_faithfulness(reports: Sequence[dict], level: str = "node") -> go.Figure:
    """Faithfulness f(C_k) against circuit size (share of units), one line per method, with
    its CPR and CMD in the legend (MIB's curves)."""
    fig = go.Figure()
    key = f"{level}_curve"
    for r in reports:
        c = r.get(key)
        if not c:
            continue
        fig.add_trace(go.Scatter(
            x=c["fractions"], y=c["faithfulness"], mode="lines+markers",
            name=f"{r['method']} (CPR {c['cpr']:.3f}, CMD {c['cmd']:.3f})",
            customdata=c["kept"], hovertemplate="share %{x:.3f}<br>kept %{customdata}"
                                                "<br>f %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    units = "components" if level == "node" else "edges"
    fig.update_layout(title=f"Faithfulness of top-k circuits ({units})",
                      xaxis_title=f"share of {units} kept",
                      yaxis_title="faithfulness f", height=420, legend={"font": {"size": 10}})
    if level == "edge":
        fig.update_xaxes(type="log")
    return fig


def fig_component_scores(reports: Sequence[dict], components: Sequence[str],
                         truth: Sequence[str] | None = None) -> go.Figure:
    """|score| of every component by method (each row scaled to its maximum); ground-truth
    components are starred on the axis."""
    truth = set(truth or ())
    z, names = [], []
    for r in reports:
        s = [abs(v) for v in r["component_scores"]]
        top = max(s) or 1.0
        z.append([v / top for v in s])
        names.append(r["method"])
    labels = [f"{c}*" if c in truth else c for c in components]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=names, colorscale="Blues", zmin=0, zmax=1,
                               colorbar={"title": "|score| / max"}))
    fig.update_layout(title="Component scores by method" + (" (* ground truth)" if truth else ""),
                      height=120 + 40 * len(names), xaxis={"tickangle": -45})
    return fig


def roc_points(scores: Sequence[float], truth: Sequence[bool]) -> tuple[list[float], list[float]]:
    """(FPR, TPR) of thresholding |scores| at every distinct value, from (0, 0) to (1, 1)."""
    s = [abs(v) for v in scores]
    pos = sum(truth)
    neg = len(truth) - pos
    fpr, tpr = [0.0], [0.0]
    for t in sorted(set(s), reverse=True):
        tp = sum(1 for v, y in zip(s, truth) if y and v >= t)
        fp = sum(1 for v, y in zip(s, truth) if not y and v >= t)
        fpr.append(fp / max(neg, 1))
        tpr.append(tp / max(pos, 1))
    return fpr, tpr


def fig_roc(reports: Sequence[dict], components: Sequence[str], truth: Sequence[str]) -> go.Figure:
    """ROC curves of each method's component scores against the ground truth."""
    t = [c in set(truth) for c in components]
    fig = go.Figure()
    for r in reports:
        fpr, tpr = roc_points(r["component_scores"], t)
        auc = r.get("auroc")
        label = r["method"] + (f" (AUROC {auc:.3f})" if auc is not None else "")
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines+markers", line_shape="hv",
                                 name=label))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", showlegend=False,
                             line={"dash": "dot", "color": "grey"}))
    fig.update_layout(title="ROC against the ground-truth components", height=420,
                      xaxis_title="false positive rate", yaxis_title="true positive rate")
    return fig


def fig_summary(rows: Sequence[dict]) -> go.Figure:
    """AUROC, CPR (components) and wall time per method, side by side."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["AUROC (components)", "CPR (components)",
                                                        "seconds"])
    methods = [r["method"] for r in rows]
    for col, key in ((1, "auroc"), (2, "cpr_node"), (3, "seconds")):
        vals = [r.get(key) for r in rows]
        if all(v is None for v in vals):
            continue
        fig.add_trace(go.Bar(x=methods, y=[v if v is not None else 0 for v in vals],
                             text=[f"{v:.3g}" if v is not None else "" for v in vals],
                             name=key, showlegend=False), row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_layout(title="Methods side by side", height=380)
    return fig


def fig_board(values: Sequence[float], size: int = 6, title: str = "") -> go.Figure:
    """A board-shaped heat map (row-major squares), e.g. a dictionary feature's correlation
    with each square's state."""
    rows = [list(values[r * size:(r + 1) * size]) for r in range(size)]
    fig = go.Figure(go.Heatmap(z=rows, x=[chr(65 + c) for c in range(size)],
                               y=[str(r + 1) for r in range(size)], colorscale="RdBu", zmid=0))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title or "Board", height=360, width=400)
    return fig


def fig_contributions(items: Sequence[dict], title: str = "Traced contributions") -> go.Figure:
    """Horizontal bars of the largest traced contributions (label, value), e.g. dictionary
    features reached through OV or QK from a logit."""
    items = sorted(items, key=lambda d: abs(d["value"]))
    fig = go.Figure(go.Bar(x=[d["value"] for d in items], y=[d["label"] for d in items],
                           orientation="h"))
    fig.update_layout(title=title, height=120 + 22 * len(items), xaxis_title="contribution")
    return fig
