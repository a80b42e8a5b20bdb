"""Plots of locality-dial runs: each `fig_*` returns a plotly Figure from plain data (a run's
`table.json` rows, `results/*.json`, `patterns.safetensors`), used unchanged by notebooks and the
explorer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

_PANELS = (("entropy_bits", "Attention entropy (bits)"),
           ("fidelity", "Pointer fidelity (target-block mass)"),
           ("perplexity", "Held-out perplexity"), ("accuracy", "Next-token accuracy"))
_MODE_NAMES = {"trained": "trained at lambda", "inference": "lambda=0 model, dial at inference",
               "finetuned": "after fine-tune"}


def fig_tradeoff(rows: Sequence[Mapping]) -> go.Figure:
    """The AILA-style trade-off: entropy (with the log2 visible-keys bound), pointer fidelity
    (mass; argmax dotted), perplexity and accuracy against lambda, one line per mode."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in _PANELS],
                        horizontal_spacing=0.1, vertical_spacing=0.16)
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c")
    for m_i, mode in enumerate(modes):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["lam"])
        x = [r["lam"] for r in rs]
        for i, (key, _) in enumerate(_PANELS):
            row, col = divmod(i, 2)
            fig.add_trace(go.Scatter(x=x, y=[r[key] for r in rs], mode="lines+markers",
                                     name=_MODE_NAMES.get(mode, mode), legendgroup=mode,
                                     showlegend=i == 0, line={"color": colors[m_i % 3]}),
                          row=row + 1, col=col + 1)
        fig.add_trace(go.Scatter(x=x, y=[r["fidelity_argmax"] for r in rs], mode="lines",
                                 name=f"{_MODE_NAMES.get(mode, mode)} (argmax fidelity)",
                                 legendgroup=mode, line={"dash": "dot", "color": colors[m_i % 3]},
                                 showlegend=False), row=1, col=2)
    if rows:
        bound = max(r["entropy_bound_bits"] for r in rows)
        fig.add_hline(y=bound, line_dash="dash", line_color="gray", row=1, col=1,
                      annotation_text="mean log2(visible keys)", annotation_position="top left")
    for i in range(4):
        fig.update_xaxes(title_text="lambda (0 distributed, 1 localist)", row=i // 2 + 1,
                         col=i % 2 + 1)
    fig.update_layout(title="Locality dial: interpretability against performance", height=650)
    return fig


def fig_training_curves(histories: Mapping[float, Sequence[Mapping]]) -> go.Figure:
    """Training cross-entropy (solid) and penalty (dotted) against step, one colour per lambda."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for lam, hist in sorted(histories.items()):
        x = [h["step"] for h in hist]
        fig.add_trace(go.Scatter(x=x, y=[h["ce"] for h in hist], name=f"CE, lambda={lam:g}",
                                 mode="lines"), secondary_y=False)
        if any(h["penalty"] for h in hist):
            fig.add_trace(go.Scatter(x=x, y=[h["penalty"] for h in hist], mode="lines",
                                     name=f"penalty, lambda={lam:g}", line={"dash": "dot"}),
                          secondary_y=True)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="cross-entropy (nats)", secondary_y=False)
    fig.update_yaxes(title_text="kappa * lambda * group-lasso", secondary_y=True)
    fig.update_layout(title="Training curves", height=450)
    return fig


def fig_layer_heads(per_head: Mapping, key: str = "entropy", label: str = "") -> go.Figure:
    """Heatmap of a per-layer x head statistic (`entropy`, `fidelity`, `fidelity_argmax`) from an
    evaluation's `per_head` dict."""
    z = per_head[key]
    fig = go.Figure(go.Heatmap(z=z, x=[f"head {h}" for h in range(len(z[0]))],
                               y=[f"layer {layer}" for layer in per_head["layers"]],
                               colorscale="Viridis", colorbar={"title": key}))
    fig.update_layout(title=f"{key} per layer and head" + (f" ({label})" if label else ""),
                      height=150 + 40 * len(z), yaxis_autorange="reversed")
    return fig


def fig_attention(pattern, blocks=None, tokens: Sequence[str] | None = None,
                  title: str = "Attention pattern") -> go.Figure:
    """One head's (or a head-mean's) [query, key] pattern; block boundaries drawn as lines."""
    if hasattr(pattern, "detach"):
        pattern = pattern.detach().float().cpu()
        if pattern.ndim == 3:
            pattern = pattern.mean(0)
        pattern = pattern.tolist()
    labels = list(tokens) if tokens is not None else None
    fig = go.Figure(go.Heatmap(z=pattern, x=labels, y=labels, colorscale="Blues",
                               colorbar={"title": "attention"}))
    if blocks is not None:
        b = blocks.tolist() if hasattr(blocks, "tolist") else list(blocks)
        for i in range(1, len(b)):
            if b[i] != b[i - 1]:
                for kw in ({"x0": i - 0.5, "x1": i - 0.5, "y0": -0.5, "y1": len(b) - 0.5},
                           {"y0": i - 0.5, "y1": i - 0.5, "x0": -0.5, "x1": len(b) - 0.5}):
                    fig.add_shape(type="line", line={"color": "red", "width": 0.5}, **kw)
    fig.update_layout(title=title, xaxis_title="key", yaxis_title="query",
                      yaxis_autorange="reversed", height=550, width=600)
    return fig


def fig_schedules(rows: Sequence[Mapping]) -> go.Figure:
    """Perplexity, entropy and fidelity per schedule (bars), one colour per mode."""
    keys = (("perplexity", "Perplexity"), ("entropy_bits", "Entropy (bits)"),
            ("fidelity", "Pointer fidelity"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in keys])
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = [r for r in rows if r["mode"] == mode]
        for i, (key, _) in enumerate(keys):
            fig.add_trace(go.Bar(x=[r["schedule"] for r in rs], y=[r[key] for r in rs],
                                 name=_MODE_NAMES.get(mode, mode), legendgroup=mode,
                                 showlegend=i == 0), row=1, col=i + 1)
    fig.update_layout(title="Progressive locality schedules", barmode="group", height=450)
    return fig


def fig_dials(schedules: Mapping[str, Sequence[float]]) -> go.Figure:
    """lambda_l against layer for each schedule."""
    fig = go.Figure()
    for name, dials in schedules.items():
        fig.add_trace(go.Scatter(x=list(range(len(dials))), y=list(dials), name=name,
                                 mode="lines+markers"))
    fig.update_layout(title="Per-layer dials", xaxis_title="layer", yaxis_title="lambda_l",
                      height=400)
    return fig
