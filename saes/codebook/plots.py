"""Figures of codebook runs: each `fig_*` returns a plotly Figure from plain data (the run's
JSON / safetensors files), used unchanged by notebooks and the explorer."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def fig_training(records: Sequence[dict]) -> go.Figure:
    """Cross-entropy (or reconstruction MSE) and the active share of codes against step;
    a pre-training phase (no codebooks) is shaded."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Loss", "Active codes (share)"])
    x = [r["step"] for r in records]
    use_ce = any(r.get("ce") == r.get("ce") for r in records)  # NaN != NaN
    y = [r.get("ce") if use_ce else r.get("mse") for r in records]
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="CE" if use_ce else "MSE"),
                  row=1, col=1)
    cb = [r for r in records if r.get("phase", "codebooks") == "codebooks"]
    fig.add_trace(go.Scatter(x=[r["step"] for r in cb], y=[r["active_frac"] for r in cb],
                             mode="lines+markers", name="active"), row=1, col=2)
    pre = [r["step"] for r in records if r.get("phase") == "pretrain"]
    if pre:
        fig.add_vrect(x0=0, x1=max(pre), fillcolor="grey", opacity=0.15, line_width=0,
                      annotation_text="no codebooks", row=1, col=1)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title="Training with codebooks", height=380, showlegend=False)
    return fig


def fig_code_counts(counts: Sequence[Sequence[int]], hook: str = "") -> go.Figure:
    """Codes ranked by how often they fire (log scale), one line per group (head)."""
    fig = go.Figure()
    for g, row in enumerate(counts):
        ranked = sorted((int(c) for c in row), reverse=True)
        fig.add_trace(go.Scatter(y=[max(c, 0.5) for c in ranked], mode="lines",
                                 name=f"group {g}"))
    fig.update_yaxes(type="log", title_text="firings")
    fig.update_xaxes(title_text="code rank")
    fig.update_layout(title=f"Code usage {hook}".strip(), height=380)
    return fig


def fig_code_state(table, hook: str = "", max_codes: int = 60) -> go.Figure:
    """Heat map of firings: the most used codes (rows) against FSM states (columns), rows
    ordered by their majority state, so a pure code is a single bright cell."""
    import torch

    t = torch.as_tensor(table)
    used = t.sum(1)
    rows = used.argsort(descending=True)[:max_codes]
    rows = rows[t[rows].argmax(1).argsort(stable=True)]
    sub = t[rows].float()
    share = sub / sub.sum(1, keepdim=True).clamp_min(1)
    fig = go.Figure(go.Heatmap(z=share.tolist(), x=list(range(t.shape[1])),
                               y=[f"code {int(r)}" for r in rows], colorscale="Viridis",
                               colorbar={"title": "share"}))
    fig.update_layout(title=f"Codes x states {hook}".strip(), xaxis_title="state",
                      height=max(380, 12 * len(rows)))
    return fig


def fig_patching(report: dict, key: str = "normalised_jsd_token") -> go.Figure:
    """Normalised JSD to the target state's output after patching each component's codes
    (1 = no effect, 0 = the model behaves exactly as in the target state)."""
    comps = report["components"]
    names = list(comps)
    fig = go.Figure(go.Bar(x=names, y=[comps[n][key] for n in names]))
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="unpatched")
    fig.update_layout(title="Patching state codes: JSD to the target state / unpatched JSD",
                      yaxis_title=key, height=380)
    return fig


def fig_purity(purity: dict, state_purity: dict | None = None) -> go.Figure:
    """Paper purity (bigram / trigram inputs) per hook, and state purity vs chance."""
    hooks = list(purity)
    fig = go.Figure()
    for kind in ("bigram", "trigram"):
        fig.add_trace(go.Bar(x=hooks, y=[purity[h][kind]["purity"] for h in hooks],
                             name=f"purity ({kind})"))
    if state_purity:
        sp = [h for h in hooks if h in state_purity]
        fig.add_trace(go.Bar(x=sp, y=[state_purity[h]["state_purity"] for h in sp],
                             name="state purity"))
        fig.add_trace(go.Bar(x=sp, y=[state_purity[h]["chance_purity"] for h in sp],
                             name="state purity, shuffled labels"))
    fig.update_layout(barmode="group", title="Code purity", yaxis_range=[0, 1], height=380)
    return fig


def fig_steering(result: dict) -> go.Figure:
    """Share of generations that reach the target (topic or state): baseline vs steered,
    per prompt when given."""
    prompts = result.get("prompts")
    if prompts:
        labels = [repr(p["prompt"]) for p in prompts]
        base = [p["baseline_share"] for p in prompts]
        steer = [p["steered_share"] for p in prompts]
    else:
        labels = ["all"]
        base = [result.get("baseline_share", result.get("baseline_share_target"))]
        steer = [result.get("steered_share", result.get("steered_share_target"))]
    fig = go.Figure([go.Bar(x=labels, y=base, name="baseline"),
                     go.Bar(x=labels, y=steer, name="codes activated")])
    fig.update_layout(barmode="group", title="Steering by codes", yaxis_title="share",
                      yaxis_range=[0, 1], height=380)
    return fig
