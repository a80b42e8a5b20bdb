"""Plots of SAE training and evaluation: each `fig_*` returns a plotly Figure, used unchanged by
notebooks and the app. Inputs are plain data (metrics.jsonl records, an eval report, lists or
tensors), so a figure can be redrawn from files alone."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

TRAINING_CURVES = (("loss", "Loss"), ("fvu", "FVU"), ("l0", "L0"), ("dead_frac", "Dead fraction"))


def _values(data) -> list[float]:
    if hasattr(data, "detach"):
        data = data.detach().float().cpu().reshape(-1).tolist()
    elif hasattr(data, "tolist"):
        data = data.tolist()
    return [float(v) for v in data]


def fig_training_curves(metrics_records: Sequence[dict]) -> go.Figure:
    """Loss, FVU, L0 and dead fraction against training tokens (2x2 subplots, one trace each),
    from the trainer's `metrics.jsonl` records."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in TRAINING_CURVES],
                        horizontal_spacing=0.1, vertical_spacing=0.15)
    x = [r.get("tokens", r.get("step")) for r in metrics_records]
    for i, (key, title) in enumerate(TRAINING_CURVES):
        row, col = divmod(i, 2)
        fig.add_trace(go.Scatter(x=x, y=[r.get(key) for r in metrics_records], name=title,
                                 mode="lines", showlegend=False), row=row + 1, col=col + 1)
        fig.update_xaxes(title_text="tokens", row=row + 1, col=col + 1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title="Training curves", height=600)
    return fig


def fig_density_histogram(log10_density, floor: float = -10.0) -> go.Figure:
    """Histogram of latents by log10 firing frequency (`density_histogram(...)["log10_density"]`
    of an eval report); latents at `floor` never fired and are counted in the title."""
    vals = _values(log10_density)
    n_dead = sum(v <= floor for v in vals)
    fig = go.Figure(go.Histogram(x=vals, nbinsx=50, name="latents"))
    title = f"Latent density ({len(vals)} latents"
    title += f", {n_dead} never fired, shown at {floor:g})" if n_dead else ")"
    fig.update_layout(title=title, xaxis_title="log10 firing frequency", yaxis_title="latents",
                      bargap=0.02)
    return fig


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fig_eval_summary(report: dict) -> go.Figure:
    """One eval report at a glance: a bar chart of the 0..1 scores (explained variance, CE and
    KL score, cosine, dead and dense fractions) next to a table of every scalar metric."""
    rec, lm = report.get("reconstruction", {}), report.get("lm") or {}
    bars = [("explained variance", rec.get("explained_variance")),
            ("CE loss score", lm.get("ce_loss_score")), ("KL score", lm.get("kl_score")),
            ("cosine sim", rec.get("cossim")), ("dead frac", rec.get("dead_frac")),
            ("dense frac", rec.get("dense_frac"))]
    bars = [(k, v) for k, v in bars if v is not None]
    table = [("FVU", rec.get("fvu")), ("L0", rec.get("l0")), ("MSE", rec.get("mse")),
             ("l2 ratio", rec.get("l2_ratio")),
             ("rel. recon. bias", rec.get("relative_reconstruction_bias")),
             ("CE clean", lm.get("ce_clean")), ("CE spliced", lm.get("ce_spliced")),
             ("CE zero-abl.", lm.get("ce_zero")), ("KL spliced", lm.get("kl_spliced")),
             ("KL zero-abl.", lm.get("kl_zero")), ("rows", rec.get("n_rows"))]
    sae = report.get("sae", {})
    title = f"{sae.get('architecture', 'SAE')} at {sae.get('hook_name', '?')}"
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                        specs=[[{"type": "xy"}, {"type": "table"}]],
                        subplot_titles=["Scores", "Metrics"])
    fig.add_trace(go.Bar(x=[k for k, _ in bars], y=[v for _, v in bars],
                         text=[_fmt(v) for _, v in bars], textposition="outside",
                         showlegend=False), row=1, col=1)
    fig.add_trace(go.Table(header={"values": ["metric", "value"]},
                           cells={"values": [[k for k, _ in table], [_fmt(v) for _, v in table]]}),
                  row=1, col=2)
    fig.update_yaxes(range=[0, 1.1], row=1, col=1)
    fig.update_layout(title=f"Evaluation: {title}", height=450)
    return fig


def fig_activation_histogram(acts_of_one_latent, latent: int | None = None,
                             nbins: int = 50) -> go.Figure:
    """Histogram of one latent's nonzero activations; the title gives how often it fires."""
    vals = _values(acts_of_one_latent)
    nonzero = [v for v in vals if v != 0]
    frac = len(nonzero) / len(vals) if vals else 0.0
    name = f"latent {latent}" if latent is not None else "latent"
    fig = go.Figure(go.Histogram(x=nonzero, nbinsx=nbins, name=name))
    fig.update_layout(title=f"Activations of {name}: active on {len(nonzero)}/{len(vals)} "
                            f"({frac:.2%})", xaxis_title="activation", yaxis_title="count",
                      bargap=0.02)
    return fig
