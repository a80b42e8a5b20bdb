"""View of an SAE / transcoder run (kind "sae", written by `interp train-sae` and
`saes.runs.train_run`): training curves from `metrics.jsonl`, the evaluation report
(`eval.json`) and the latent density histogram, all drawn by `saes.plots`; the evaluation
suite's report when `interp eval-sae --suite` wrote one (`app/views/sae_evals.py`); a link to
the feature browser for this run."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.data import artefact, read_json, read_jsonl, scan_runs
from app.run_page import page_of
from app.ui import guard, plot
from app.views import sae_evals
from interp.workspace import Run


def render(run: Run) -> None:
    from saes.plots import fig_density_histogram, fig_eval_summary, fig_training_curves

    sae_cfg = run.config.get("sae", {}) if isinstance(run.config.get("sae"), dict) else {}
    if sae_cfg:
        kind = "transcoder" if sae_cfg.get("transcoder") else "SAE"
        hooks = sae_cfg.get("hook_name", "?") + (
            f" → {sae_cfg['hook_name_out']}" if sae_cfg.get("hook_name_out") else "")
        st.markdown(f"**{sae_cfg.get('architecture', '?')} {kind}** · `{hooks}` · "
                    f"d_in {sae_cfg.get('d_in')} · d_sae {sae_cfg.get('d_sae')}"
                    + (f" · k {sae_cfg['k']}" if sae_cfg.get("k") else ""))
    feature_links(run)

    tab_train, tab_eval, tab_density, tab_suite = st.tabs(["Training", "Evaluation", "Density",
                                                           "Suite"])
    with tab_train:
        log = artefact(run, "metrics", required=False)
        if log is None:
            st.info("No training log (metrics.jsonl) yet.")
        else:
            records, truncated = read_jsonl(log)
            if not records:
                st.info("The training log is empty so far.")
            else:
                plot(fig_training_curves(records), key="curves")
                if truncated:
                    st.caption("Only the end of a long log is shown.")
    report = None
    path = artefact(run, "eval", required=False)
    if path is not None:
        report = read_json(path, expect=dict)
    with tab_eval:
        if report is None:
            st.info("Not evaluated yet: run `interp eval-sae " + str(run.path) + "`.")
        else:
            plot(fig_eval_summary(report), key="eval")
            with st.expander("the whole report (eval.json)"):
                st.json({k: v for k, v in report.items() if k != "density"}, expanded=False)
    with tab_density:
        density = (report or {}).get("density") or {}
        if not density.get("log10_density"):
            st.info("No density histogram: the run has no evaluation report yet.")
        else:
            plot(fig_density_histogram(density["log10_density"],
                                       floor=density.get("floor", -10.0)), key="density")
    with tab_suite:
        with guard("the evaluation suite"):
            sae_evals.render(run)


def feature_runs_of(run: Run) -> list[Run]:
    """The finished `features` runs computed from this SAE run (by their `sae_run` config)."""
    me = run.path.resolve()
    out = []
    for r in scan_runs(kind="features"):
        src = r.config.get("sae_run")
        if r.status == "done" and isinstance(src, str):
            try:
                if Path(src).resolve() == me:
                    out.append(r)
            except (OSError, ValueError):
                continue
    return out


def feature_links(run: Run) -> None:
    """Links to this SAE's feature pages, or the command that computes them."""
    found = feature_runs_of(run)
    for r in found:
        st.page_link(page_of("features"), label=f"Browse its features ({r.name})",
                     icon=":material/search:", query_params={"run": r.name})
    if not found and run.status == "done":
        st.caption(f"No feature pages for this SAE yet: `interp features {run.path}`.")
