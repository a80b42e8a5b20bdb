"""Figures of feature pages (plotly `fig_*`, used unchanged by notebooks and the explorer) and an
HTML rendering of top contexts. Inputs are a `FeaturePage` (or its `to_dict()`) and plain arrays."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def _get(page, key):
    return page[key] if isinstance(page, dict) else getattr(page, key)


def fig_activation_histogram(page) -> go.Figure:
    """Histogram of one latent's positive activations (log-spaced bins, empty ones dropped)."""
    edges = np.asarray(_get(page, "hist_edges"))
    counts = np.asarray(_get(page, "hist_counts"))
    nz = np.nonzero(counts)[0]
    fig = go.Figure()
    if nz.size:
        lo, hi = nz[0], nz[-1] + 1
        mids = np.sqrt(edges[lo:hi] * edges[lo + 1:hi + 1])
        fig.add_trace(go.Bar(x=mids, y=counts[lo:hi], width=np.diff(edges[lo:hi + 1]),
                             name="tokens"))
    fig.update_xaxes(type="log", title_text="activation")
    fig.update_layout(title=f"Latent {_get(page, 'latent')}: activation histogram "
                            f"({_get(page, 'count')} firing tokens)",
                      yaxis_title="tokens", bargap=0)
    return fig


def fig_logit_effects(page) -> go.Figure:
    """Top and bottom tokens of the latent's direct logit effect (two horizontal bar charts)."""
    top, bottom = _get(page, "top_logits"), _get(page, "bottom_logits")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Negative logits", "Positive logits"),
                        horizontal_spacing=0.25)
    if bottom:
        fig.add_trace(go.Bar(y=[repr(t) for t, _ in bottom], x=[v for _, v in bottom],
                             orientation="h", marker_color="#d62728", showlegend=False), 1, 1)
    if top:
        fig.add_trace(go.Bar(y=[repr(t) for t, _ in top], x=[v for _, v in top],
                             orientation="h", marker_color="#1f77b4", showlegend=False), 1, 2)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"Latent {_get(page, 'latent')}: logit effects", height=380)
    return fig


def fig_feature_page(page) -> go.Figure:
    """One figure for a feature page: activation histogram, top context activations and the
    logit effects, with density/mean/max in the title."""
    fig = make_subplots(rows=1, cols=3, column_widths=[0.4, 0.3, 0.3],
                        subplot_titles=("Activation histogram", "Top activations",
                                        "Logit effects"))
    h = fig_activation_histogram(page)
    for t in h.data:
        fig.add_trace(t, 1, 1)
    fig.update_xaxes(type="log", row=1, col=1)
    ctx = _get(page, "contexts")
    acts = [(_get(c, "act")) for c in ctx]
    fig.add_trace(go.Bar(x=list(range(len(acts))), y=acts, name="top contexts",
                         showlegend=False), 1, 2)
    fig.update_xaxes(title_text="rank", row=1, col=2)
    logits = list(_get(page, "top_logits")) + list(reversed(_get(page, "bottom_logits")))
    if logits:
        fig.add_trace(go.Bar(y=[repr(t) for t, _ in logits], x=[v for _, v in logits],
                             orientation="h", showlegend=False,
                             marker_color=["#1f77b4" if v >= 0 else "#d62728"
                                           for _, v in logits]), 1, 3)
        fig.update_yaxes(autorange="reversed", row=1, col=3)
    fig.update_layout(
        title=(f"Latent {_get(page, 'latent')}: density {_get(page, 'density'):.3g}, "
               f"mean {_get(page, 'mean_act'):.3g}, max {_get(page, 'max_act'):.3g}"),
        height=420, bargap=0.05)
    return fig


def fig_density_all(log10_density, floor: float = -10.0) -> go.Figure:
    """Histogram of every latent's log10 firing density; never-firing latents (at `floor`) are
    counted in the title."""
    v = np.asarray(log10_density, dtype=float)
    dead = int((v <= floor + 1e-9).sum())
    fig = go.Figure(go.Histogram(x=v[v > floor + 1e-9], nbinsx=60, name="latents"))
    fig.update_layout(title=f"Feature density ({len(v)} latents, {dead} never fired)",
                      xaxis_title="log10 density (fraction of tokens)", yaxis_title="latents",
                      bargap=0.02)
    return fig


def contexts_html(page, max_contexts: int | None = None) -> str:
    """The top contexts as HTML: each token shaded by the latent's activation (relative to the
    page's max), the activating token underlined; token strings are escaped."""
    ctxs = _get(page, "contexts")[:max_contexts]
    top = max([_get(c, "act") for c in ctxs] or [1.0]) or 1.0
    lines = []
    for c in ctxs:
        spans = []
        for i, (tok, a) in enumerate(zip(_get(c, "tokens"), _get(c, "acts"))):
            alpha = max(0.0, min(1.0, a / top))
            style = f"background: rgba(255,140,0,{alpha:.2f});"
            if i == _get(c, "center"):
                style += " text-decoration: underline; font-weight: bold;"
            text = html.escape(tok).replace("\n", "\u21b5").replace(" ", "&nbsp;")
            spans.append(f'<span title="{a:.3g}" style="{style}">{text}</span>')
        lines.append(f'<div style="font-family: monospace; white-space: nowrap;">'
                     f'<b>{_get(c, "act"):.3g}</b>&nbsp;&nbsp;{"".join(spans)}</div>')
    return "\n".join(lines)
