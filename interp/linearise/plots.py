"""Plotly figures of a linearisation (used unchanged by the notebook and the explorer).

Each `fig_*` takes the `summary` dict of a `Linearisation` (what `linearise.json` holds).
"""

from __future__ import annotations

import plotly.graph_objects as go


def _title(summary: dict, what: str) -> str:
    pred = summary.get("prediction", [{}])[0].get("token", "?")
    return f"{what} — {summary.get('site', '')} at position {summary.get('position')} (next: {pred!r})"


def fig_singular_values(summary: dict) -> go.Figure:
    """Singular value spectrum of the stacked Jacobian (and of each J_i when computed)."""
    fig = go.Figure()
    sig = summary["sigma"]
    fig.add_trace(go.Scatter(x=list(range(1, len(sig) + 1)), y=sig, mode="lines+markers",
                             name="stacked J"))
    toks = summary.get("tokens", [])
    for row in summary.get("per_token", []):
        tok = toks[row["position"]] if row["position"] < len(toks) else row["position"]
        fig.add_trace(go.Scatter(x=list(range(1, len(row["sigma"]) + 1)), y=row["sigma"],
                                 mode="lines", name=f"J_{row['position']} {tok!r}",
                                 line={"width": 1}, opacity=0.6))
    m = summary.get("metrics", {})
    fig.update_layout(title=_title(summary, f"Singular values (stable rank "
                                            f"{m.get('stable_rank', float('nan')):.2f})"),
                      xaxis_title="index", yaxis_title="singular value", yaxis_type="log",
                      template="plotly_white")
    return fig


def fig_token_decodings(summary: dict) -> go.Figure:
    """Table: each top singular vector's σ, left vector decoded to output tokens, right vector
    decoded to the nearest input tokens (at its dominant position)."""
    rows = summary["singular"]
    toks = summary.get("tokens", [])

    def fmt(ts):
        return " · ".join(repr(t)[1:-1] for t in ts)

    cells = [
        [r["index"] + 1 for r in rows],
        [f"{r['sigma']:.4g}" for r in rows],
        [fmt(r["left"]["tokens"]) for r in rows],
        [f"{r['right']['position']} {toks[r['right']['position']]!r}"
         if r["right"]["position"] < len(toks) else r["right"]["position"] for r in rows],
        [fmt(r["right"]["tokens"]) for r in rows],
    ]
    fig = go.Figure(go.Table(
        columnwidth=[30, 60, 320, 110, 320],
        header={"values": ["#", "σ", "left vector → output tokens (W_U)",
                           "input position", "right vector → nearest input tokens"],
                "align": "left"},
        cells={"values": cells, "align": "left"}))
    fig.update_layout(title=_title(summary, "Singular vectors decoded"),
                      template="plotly_white", height=120 + 32 * len(rows))
    return fig


def fig_layer_ranks(summary: dict) -> go.Figure:
    """Stable rank (and σ_max) of the cumulative Jacobian of every layer's outputs."""
    layers = summary.get("layers") or []
    fig = go.Figure()
    for comp, dash in (("resid_post", "solid"), ("attn_out", "dot"), ("mlp_out", "dash")):
        rows = [r for r in layers if r["component"] == comp]
        if not rows:
            continue
        fig.add_trace(go.Scatter(
            x=[r["layer"] for r in rows], y=[r["stable_rank"] for r in rows],
            mode="lines+markers", name=comp, line={"dash": dash},
            text=[" · ".join(r["top_tokens"]) for r in rows],
            hovertemplate="layer %{x}<br>stable rank %{y:.2f}<br>top u: %{text}<extra>" + comp
                          + "</extra>"))
    fig.update_layout(title=_title(summary, "Stable rank of the cumulative Jacobian per layer"),
                      xaxis_title="layer", yaxis_title="stable rank ‖J‖²_F / σ²_max",
                      yaxis_type="log", template="plotly_white")
    return fig


def fig_contributions(summary: dict) -> go.Figure:
    """How much each input token's term J_i x_i contributes to the output (projection on ŷ)."""
    rows = summary["contributions"]
    labels = [f"{r['position']}:{r['token']!r}" for r in rows]
    fig = go.Figure(go.Bar(x=labels, y=[r["share"] for r in rows],
                           hovertext=[f"‖J_i x_i‖ = {r['norm']:.3g}" for r in rows]))
    fig.update_layout(title=_title(summary, "Share of the output from each input token "
                                            "(J_i x_i · ŷ / ‖y‖)"),
                      xaxis_title="input token", yaxis_title="share of y",
                      template="plotly_white")
    return fig


def fig_convergence(summary: dict) -> go.Figure:
    """How the block Krylov estimates of the top-k singular values converged: after each block
    of products, the largest relative distance of a Ritz value to its final value (left
    projection after adjoint products, right after forward ones). Empty for a dense SVD."""
    steps = summary.get("krylov") or []
    fig = go.Figure()
    if steps:
        final = steps[-1]["sigma"]
        for side, symbol in (("left", "circle"), ("right", "diamond")):
            rows = [r for r in steps if r["side"] == side and len(r["sigma"]) == len(final)]
            fig.add_trace(go.Scatter(
                x=[r["products"] for r in rows],
                y=[max(abs(a - b) / b if b else 0.0 for a, b in zip(r["sigma"], final)) or None
                   for r in rows],
                mode="markers", marker={"symbol": symbol, "size": 9},
                name=f"{side} projection ({'after Jᵀ' if side == 'left' else 'after J'} products)"))
    tol = summary.get("tol")
    if tol:
        fig.add_hline(y=tol, line={"dash": "dot"}, annotation_text=f"tol {tol:g}")
    fig.update_layout(title=_title(summary, "Convergence of the top singular values"),
                      xaxis_title="Jacobian-vector products",
                      yaxis_title="max relative distance to the final values", yaxis_type="log",
                      template="plotly_white")
    return fig


FIGURES = {"singular_values": fig_singular_values, "token_decodings": fig_token_decodings,
           "layer_ranks": fig_layer_ranks, "contributions": fig_contributions,
           "convergence": fig_convergence}
