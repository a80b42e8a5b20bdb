"""Figures of the atoms analysis (plotly `fig_*`, shared by notebooks and the explorer). Inputs
are the plain data an atoms run writes: the comparison table (list of row dicts), the angle
diagnostics and per-unit coherences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"neurons": "#7f7f7f", "features": "#1f77b4", "atoms": "#d62728"}


def fig_atoms_comparison(table: Sequence[dict], q_form: str = "quantile") -> go.Figure:
    """q* (the chosen form) and faithfulness R^2 (Euclidean and AIP) per layer for neurons,
    features and atoms: grouped bars, one subplot per measure."""
    key = f"q_star_{q_form}"
    measures = ((key, f"stability q* ({q_form})"), ("r2_euclid", "R² (Euclidean)"),
                ("r2_aip", "R² (AIP)"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in measures])
    hooks = list(dict.fromkeys(r["hook"] for r in table))
    labels = [f"L{r}" if (r := next(x["layer"] for x in table if x["hook"] == h)) is not None
              else h for h in hooks]
    for basis in ("neurons", "features", "atoms"):
        rows = {r["hook"]: r for r in table if r["basis"] == basis}
        for c, (k, _) in enumerate(measures, start=1):
            fig.add_trace(go.Bar(x=labels, y=[rows.get(h, {}).get(k) for h in hooks], name=basis,
                                 marker_color=COLORS[basis], showlegend=c == 1,
                                 legendgroup=basis), 1, c)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(barmode="group", title="Neurons vs features vs atoms", height=420)
    return fig


def fig_angle_histograms(diag: dict, title: str = "") -> go.Figure:
    """Pairwise angle histograms between activations: Euclidean vs AIP (the representation-
    shift figure); means in the legend."""
    edges = np.asarray(diag["edges_deg"])
    mids = (edges[1:] + edges[:-1]) / 2
    fig = go.Figure()
    for key, name, color in (("euclid", "Euclidean", "#7f7f7f"), ("aip", "AIP", "#d62728")):
        fig.add_trace(go.Bar(x=mids, y=diag[f"{key}_hist"], name=f"{name} (mean "
                             f"{diag[f'{key}_mean_deg']:.1f}°)", marker_color=color, opacity=0.6))
    fig.add_vline(x=90, line_dash="dot")
    fig.update_layout(barmode="overlay", bargap=0, xaxis_title="angle (degrees)",
                      yaxis_title="pairs", title=title or "Angles between activations")
    return fig


def fig_coherence_histogram(mus: dict, bound: float | None = None) -> go.Figure:
    """Histograms of per-unit AIP coherence mu_j, one trace per basis ({name: values});
    `bound` (e.g. 1/(2K-1)) is drawn as a vertical line."""
    fig = go.Figure()
    for name, v in mus.items():
        vals = v.tolist() if hasattr(v, "tolist") else list(v)
        fig.add_trace(go.Histogram(x=vals, name=name, opacity=0.6, nbinsx=60,
                                   marker_color=COLORS.get(name)))
    if bound is not None:
        fig.add_vline(x=bound, line_dash="dot", annotation_text="1/(2K-1)")
    fig.update_layout(barmode="overlay", xaxis_title="per-unit coherence μ_j (AIP)",
                      yaxis_title="units", title="Per-unit coherence")
    return fig
