"""Plots of probe, lens and geometry runs: each `fig_*` returns a plotly Figure from the plain
data a run writes (`layers.json` rows, `example.json`), used unchanged by notebooks and the app."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

LENS_VARIANTS = (("logit", "logit lens (final norm)"), ("logit_raw", "logit lens (raw, no norm)"),
                 ("tuned", "tuned lens"))


def _layers(rows: Sequence[dict]) -> list[str]:
    return [str(r.get("layer", i)) for i, r in enumerate(rows)]


def fig_probe_curve(layers: dict) -> go.Figure:
    """Validation accuracy per layer of the probe, its control task and the majority baseline
    (a probe `layers.json`); selectivity = probe - control is in the hover text."""
    rows = layers["rows"]
    x = _layers(rows)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[r["val_acc"] for r in rows], mode="lines+markers",
                             name="probe (validation)",
                             customdata=[r.get("selectivity") for r in rows],
                             hovertemplate="layer %{x}<br>acc %{y:.3f}<br>selectivity "
                                           "%{customdata:.3f}<extra></extra>"))
    if rows and "control_acc" in rows[0]:
        fig.add_trace(go.Scatter(x=x, y=[r["control_acc"] for r in rows], mode="lines+markers",
                                 name="control task", line={"dash": "dot"}))
    fig.add_trace(go.Scatter(x=x, y=[r["majority_acc"] for r in rows], mode="lines",
                             name="majority class", line={"dash": "dash", "color": "grey"}))
    fig.update_layout(title=f"Linear probe: {layers.get('task', '')}", xaxis_title="layer "
                      "(residual stream after block)", yaxis_title="accuracy",
                      yaxis_range=[0, 1.02])
    return fig


def fig_lens_kl(rows: Sequence[dict]) -> go.Figure:
    """KL(final || lens) per layer for the logit lens with and without the final norm and the
    tuned lens (a lens run's `layers.json` rows), log scale."""
    x = _layers(rows)
    fig = go.Figure()
    for key, label in LENS_VARIANTS:
        if rows and f"kl_{key}" in rows[0]:
            fig.add_trace(go.Scatter(x=x, y=[max(r[f"kl_{key}"], 1e-6) for r in rows],
                                     mode="lines+markers", name=label))
    fig.update_layout(title="KL to the model's output distribution", xaxis_title="layer",
                      yaxis_title="KL (nats)", yaxis_type="log")
    return fig


def fig_lens_error(rows: Sequence[dict]) -> go.Figure:
    """Prediction error -log p[next token] per layer (LLM-Microscope) for each lens variant,
    with top-1 agreement with the model's own prediction in the hover text."""
    x = _layers(rows)
    fig = go.Figure()
    for key, label in LENS_VARIANTS:
        if rows and f"pred_error_{key}" in rows[0]:
            fig.add_trace(go.Scatter(x=x, y=[r[f"pred_error_{key}"] for r in rows],
                                     customdata=[r[f"top1_agree_{key}"] for r in rows],
                                     hovertemplate="layer %{x}<br>error %{y:.3f}<br>top-1 "
                                                   "agreement %{customdata:.2f}<extra></extra>",
                                     mode="lines+markers", name=label))
    fig.update_layout(title="Next-token prediction error per layer", xaxis_title="layer",
                      yaxis_title="-log p(next token) (nats)")
    return fig


def fig_lens_heatmap(example: dict, variant: str = "logit") -> go.Figure:
    """One text under the lens: prediction error per layer (rows) and position (columns), each
    cell's top-1 token as text (a lens run's `example.json`)."""
    ex = example[variant]
    cols = [f"{i}:{t!r}" for i, t in enumerate(ex["tokens"])]
    fig = go.Figure(go.Heatmap(z=ex["pred_error"], x=cols, y=example["layers"],
                               text=ex["top1"], texttemplate="%{text}", colorscale="Viridis",
                               colorbar={"title": "-log p"},
                               hovertemplate="layer %{y}<br>%{x}<br>top-1 %{text}<br>error "
                                             "%{z:.2f}<extra></extra>"))
    label = dict(LENS_VARIANTS).get(variant, variant)
    fig.update_layout(title=f"{label}: prediction error by layer and position",
                      xaxis_title="position: input token", yaxis_title="layer",
                      height=max(400, 18 * len(example["layers"])))
    return fig


def fig_linearity(rows: Sequence[dict]) -> go.Figure:
    """Linearity score of the map from each layer to the next, and of the map to the residual
    update (centred variant), per layer (a geometry run's `layers.json` rows)."""
    rows = [r for r in rows if "linearity" in r]
    x = _layers(rows)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[r["linearity"] for r in rows], mode="lines+markers",
                             name="linearity (H_l -> H_l+1)"))
    fig.add_trace(go.Scatter(x=x, y=[r["linearity_centered"] for r in rows], mode="lines+markers",
                             name="centred (H_l -> H_l+1 - H_l)"))
    fig.update_layout(title="Layer linearity (LLM-Microscope)", xaxis_title="from layer",
                      yaxis_title="1 - ||XA - Y||²", yaxis_range=[0, 1.02])
    return fig


def fig_geometry(rows: Sequence[dict]) -> go.Figure:
    """Intrinsic dimension (TwoNN) and anisotropy per layer, side by side."""
    x = _layers(rows)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Intrinsic dimension (TwoNN)",
                                                        "Anisotropy (λ_max / Σλ)"])
    fig.add_trace(go.Scatter(x=x, y=[r["intrinsic_dim"] for r in rows], mode="lines+markers",
                             showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=[r["anisotropy"] for r in rows], mode="lines+markers",
                             showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(title="Layer geometry", height=400)
    return fig


def fig_token_nonlinearity(example: dict) -> go.Figure:
    """Per-token nonlinearity E (rows: the map from layer l; columns: tokens) of a geometry
    run's `example.json`."""
    cols = [f"{i}:{t!r}" for i, t in enumerate(example["tokens"])]
    fig = go.Figure(go.Heatmap(z=example["token_nonlinearity"], x=cols, y=example["layers"],
                               colorscale="Magma", colorbar={"title": "E"}))
    fig.update_layout(title="Token-level nonlinearity ||A ĥ_l - ĥ_l+1||", xaxis_title="token",
                      yaxis_title="from layer", height=max(400, 18 * len(example["layers"])))
    return fig
