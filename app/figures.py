"""Figures the explorer draws for data that no capability package plots (activation-store
norms). Each `fig_*` takes plain data and returns a plotly Figure."""

from __future__ import annotations

import plotly.graph_objects as go


def fig_norm_histogram(norms: dict[str, list[float]], log_x: bool = True) -> go.Figure:
    """Histogram of activation-vector L2 norms, one overlaid trace per hook; the x axis is
    log10(norm) by default since residual norms span orders of magnitude (outliers, BOS)."""
    import math

    fig = go.Figure()
    for hook, vals in norms.items():
        xs = [math.log10(v) for v in vals if v > 0] if log_x else list(vals)
        fig.add_trace(go.Histogram(x=xs, name=hook, nbinsx=80, opacity=0.7))
    n = max((len(v) for v in norms.values()), default=0)
    fig.update_layout(title=f"Activation norms ({n} sampled rows per hook)", barmode="overlay",
                      xaxis_title="log10 L2 norm" if log_x else "L2 norm", yaxis_title="rows",
                      bargap=0.02, legend={"orientation": "h", "y": -0.2})
    return fig
