"""Figures of evaluation reports: each `fig_*` returns a plotly Figure, from the report's JSON
(`read_report`) or a detail table (`read_table`), so notebooks and the explorer draw the same
thing from files alone. Every value is drawn with its interval; baselines sit beside the SAE."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: subjects in drawing order, with fixed colours (the SAE first, baselines after)
SUBJECT_COLOURS = {"sae": "#1f77b4", "random": "#7f7f7f", "neurons": "#ff7f0e", "pca": "#2ca02c",
                   "true": "#9467bd", "model": "#d62728"}


def _colour(subject: str) -> str:
    return SUBJECT_COLOURS.get(subject, "#17becf")


def _err(rows: list[dict]) -> dict | None:
    if not any(r.get("ci_low") is not None for r in rows):
        return None
    return {"type": "data", "symmetric": False,
            "array": [(r["ci_high"] - r["value"]) if r.get("ci_high") is not None else 0
                      for r in rows],
            "arrayminus": [(r["value"] - r["ci_low"]) if r.get("ci_low") is not None else 0
                           for r in rows]}


def fig_suite(report: dict, suite: str) -> go.Figure:
    """One small panel per metric of `suite`: a bar per subject with its interval (and the
    seed spread in the hover text when the report has several seeds)."""
    rows = [r for r in report.get("rows", []) if r["suite"] == suite and r["value"] is not None]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    if not metrics:
        fig = go.Figure()
        info = (report.get("suites") or {}).get(suite, {})
        why = info.get("skipped") or info.get("reason") or "no figures"
        fig.update_layout(title=f"{suite}: {why}")
        return fig
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=metrics,
                        vertical_spacing=0.5 / max(1, nrows), horizontal_spacing=0.08)
    shown = set()
    for i, metric in enumerate(metrics):
        rr = [r for r in rows if r["metric"] == metric]
        for r in rr:
            hover = f"{r['subject']}: {r['value']:.4g}"
            if r.get("ci_low") is not None:
                hover += f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}] (n={r.get('n')})"
            if r.get("seed_sd") is not None and (r.get("n_seeds") or 0) > 1:
                hover += f"; seeds: {r['seed_mean']:.4g} ± {r['seed_sd']:.3g} ({r['n_seeds']})"
            fig.add_trace(go.Bar(x=[r["subject"]], y=[r["value"]], error_y=_err([r]),
                                 marker_color=_colour(r["subject"]), name=r["subject"],
                                 hovertext=[hover], hoverinfo="text",
                                 showlegend=r["subject"] not in shown),
                          row=i // cols + 1, col=i % cols + 1)
            shown.add(r["subject"])
    title = f"{suite} ({report.get('sae', {}).get('architecture', 'SAE')})"
    warn = next((r.get("warning") for r in rows if r.get("warning")), None)
    note = next((r.get("note") for r in rows if r.get("placeholder")), None)
    if warn or note:
        title += f"<br><sup>{warn or note}</sup>"
    fig.update_layout(title=title, height=260 * nrows + 80, barmode="group")
    return fig


def fig_probing_curve(report: dict) -> go.Figure:
    """Sparse-probing test accuracy against k per subject (interval band), with the dense
    probe's accuracy as the ceiling."""
    rows = [r for r in report.get("rows", []) if r["suite"] == "probing"]
    fig = go.Figure()
    for subject in dict.fromkeys(r["subject"] for r in rows if r.get("k") is not None):
        rr = sorted((r for r in rows if r["subject"] == subject and r.get("k") is not None),
                    key=lambda r: r["k"])
        ks = [r["k"] for r in rr]
        c = _colour(subject)
        if all(r.get("ci_low") is not None for r in rr):
            fig.add_trace(go.Scatter(x=ks + ks[::-1],
                                     y=[r["ci_high"] for r in rr] + [r["ci_low"] for r in rr][::-1],
                                     fill="toself", fillcolor=c, opacity=0.15, line={"width": 0},
                                     hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=ks, y=[r["value"] for r in rr], mode="lines+markers",
                                 name=subject, line={"color": c}))
    dense = [r for r in rows if r["metric"] == "dense_accuracy"]
    if dense:
        d = dense[0]
        fig.add_hline(y=d["value"], line_dash="dash", line_color=_colour("model"),
                      annotation_text=f"dense probe {d['value']:.3f}")
    fig.update_layout(title="Sparse probing: accuracy of a probe on the top-k latents",
                      xaxis_title="k (latents)", yaxis_title="test accuracy", xaxis_type="log")
    return fig


def fig_absorption_letters(table: dict) -> go.Figure:
    """Per first letter: mean absorption fraction of each subject (`absorption_letters`)."""
    fig = go.Figure()
    subjects = list(dict.fromkeys(table.get("subject", [])))
    for s in subjects:
        idx = [i for i, v in enumerate(table["subject"]) if v == s]
        fig.add_trace(go.Bar(x=[table["letter"][i] for i in idx],
                             y=[table["mean_absorption_fraction"][i] for i in idx], name=s,
                             marker_color=_colour(s),
                             hovertext=[f"{table['num_split_features'][i]} main latents, "
                                        f"{table['n_true_positives'][i]} words" for i in idx]))
    fig.update_layout(title="Feature absorption by first letter", barmode="group",
                      xaxis_title="first letter", yaxis_title="mean absorption fraction")
    return fig


def fig_recovery(table: dict, expected_random: float | None = None) -> go.Figure:
    """Histogram of the matched decoder cosine of every true feature, per subject
    (`synthetic_features`), with the random decoder's analytic expected best cosine."""
    fig = go.Figure()
    for s in dict.fromkeys(table.get("subject", [])):
        vals = [v for v, t in zip(table["matched_cos"], table["subject"]) if t == s]
        fig.add_trace(go.Histogram(x=vals, name=s, opacity=0.6, marker_color=_colour(s),
                                   xbins={"start": -0.2, "end": 1.0, "size": 0.025}))
    if expected_random is not None:
        fig.add_vline(x=expected_random, line_dash="dot",
                      annotation_text=f"random, expected best cos {expected_random:.3f}")
    fig.update_layout(title="Recovery of the true features (Hungarian-matched cosine)",
                      barmode="overlay", xaxis_title="cosine with the matched latent",
                      yaxis_title="true features")
    return fig


def fig_autointerp(table: dict) -> go.Figure:
    """Detection against fuzzing accuracy of every scored latent, per subject."""
    fig = go.Figure()
    for s in dict.fromkeys(table.get("subject", [])):
        idx = [i for i, v in enumerate(table["subject"]) if v == s]
        fig.add_trace(go.Scatter(x=[table["detection_accuracy"][i] for i in idx],
                                 y=[table["fuzzing_accuracy"][i] for i in idx], mode="markers",
                                 name=s, marker={"color": _colour(s), "size": 9},
                                 hovertext=[f"latent {table['latent'][i]}: "
                                            f"{table['explanation'][i]}" for i in idx]))
    fig.add_shape(type="rect", x0=0.45, x1=0.55, y0=0.45, y1=0.55, line={"dash": "dot"})
    fig.update_layout(title="Auto-interpretability per latent (0.5 = chance)",
                      xaxis_title="detection accuracy", yaxis_title="fuzzing accuracy",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.02])
    return fig


def fig_compare(reports: dict[str, dict], metrics: Sequence[tuple[str, str]],
                baselines: Sequence[str] = ("random",)) -> go.Figure:
    """Several dictionaries (e.g. architectures) side by side: one panel per (suite, metric),
    a marker with its interval per dictionary, the first report's baselines as dashed lines."""
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[f"{s}: {m}" for s, m in metrics],
                        vertical_spacing=0.5 / max(1, nrows), horizontal_spacing=0.08)
    names = list(reports)
    first = reports[names[0]] if names else {}
    for i, (suite, metric) in enumerate(metrics):
        pos = {"row": i // cols + 1, "col": i % cols + 1}
        rows = []
        for name in names:
            r = next((r for r in reports[name].get("rows", []) if r["suite"] == suite
                      and r["metric"] == metric and r["subject"] == "sae"), None)
            rows.append(r or {"value": None})
        have = [(n, r) for n, r in zip(names, rows) if r.get("value") is not None]
        if have:
            fig.add_trace(go.Scatter(x=[n for n, _ in have], y=[r["value"] for _, r in have],
                                     error_y=_err([r for _, r in have]), mode="markers",
                                     marker={"size": 10, "color": _colour("sae")},
                                     showlegend=False), **pos)
        for b in baselines:
            rb = next((r for r in first.get("rows", []) if r["suite"] == suite
                       and r["metric"] == metric and r["subject"] == b), None)
            if rb is not None and rb["value"] is not None:
                fig.add_hline(y=rb["value"], line_dash="dash", line_color=_colour(b),
                              annotation_text=b, annotation_font_size=9, **pos)
    fig.update_layout(title="Dictionaries compared (95% bootstrap intervals; dashed: baselines)",
                      height=260 * nrows + 80)
    return fig


#: a suite's figures beyond its panel of metrics: (figure name, detail table or None, drawer
#: of (report, table, suite info)); a drawer whose table was not written is left out
DETAIL_FIGURES: dict[str, list[tuple[str, str | None, Callable]]] = {
    "probing": [("probing_curve", None, lambda rep, t, info: fig_probing_curve(rep))],
    "absorption": [("absorption_letters", "absorption_letters",
                    lambda rep, t, info: fig_absorption_letters(t))],
    "synthetic": [("synthetic_recovery", "synthetic_features",
                   lambda rep, t, info: fig_recovery(t, info.get("random_expected_max_cos")))],
    "autointerp": [("autointerp_latents", "autointerp_latents",
                    lambda rep, t, info: fig_autointerp(t))],
}


def suite_figures(report: dict, suite: str, table: Callable[[str], dict | None]
                  ) -> dict[str, go.Figure]:
    """The figures of one suite of a report, by name: its metric panel (`fig_suite`) and its
    detail figures (`DETAIL_FIGURES`); `table(name)` gives a detail table or None. What
    `interp eval-sae --suite` writes and the explorer shows."""
    figs = {suite: fig_suite(report, suite)}
    info = (report.get("suites") or {}).get(suite, {})
    for name, table_name, draw in DETAIL_FIGURES.get(suite, []):
        t = table(table_name) if table_name else None
        if table_name is None or t:
            figs[name] = draw(report, t, info)
    return figs


def write_figures(report: dict, tables: dict[str, dict], out_dir: str | Path) -> dict[str, str]:
    """Every suite's figures as plotly JSON files `figures/<name>.json` in `out_dir`
    (`plotly.io.read_json` opens one); returns {name: relative path}."""
    from interp.io import atomic_write_bytes

    out = Path(out_dir) / "figures"
    written = {}
    for suite in (report.get("suites") or {}):
        for name, fig in suite_figures(report, suite, tables.get).items():
            atomic_write_bytes(out / f"{name}.json", fig.to_json().encode())
            written[name] = f"figures/{name}.json"
    return written
