"""View of an SAE run's evaluation suite (`saes.evals.run_suite`: the run's `evals` artefact,
`evals/report.json` and its Parquet tables): one tab per suite, every figure drawn by
`saes.evals.plots` with its interval and the baselines beside the SAE; warnings (SCR/TPP
reliability, placeholder auto-interpretability) shown above the figures they concern."""

from __future__ import annotations

import streamlit as st

from app.ui import artefact, plot, read_json
from interp.workspace import Run

SUITE_TITLES = {"core": "Core", "probing": "Sparse probing", "absorption": "Absorption",
                "synthetic": "Synthetic", "autointerp": "Auto-interp", "scr": "SCR",
                "tpp": "TPP"}


def _table(run: Run, report: dict, name: str) -> dict | None:
    """A detail table of the report (None if it was not written)."""
    from saes.evals.report import read_table

    if name not in (report.get("files") or {}):
        return None
    path = artefact(run, "evals", required=False)
    return read_table(path.parent, name) if path is not None else None


def render(run: Run) -> None:
    from saes.evals.plots import (fig_absorption_letters, fig_autointerp, fig_probing_curve,
                                  fig_recovery, fig_suite)

    path = artefact(run, "evals", required=False)
    if path is None:
        st.info(f"No evaluation suite yet: run `interp eval-sae {run.path} --suite "
                "core,probing,absorption,synthetic,autointerp`.")
        return
    report = read_json(path)
    done = report.get("suites", {})
    suites = [s for s in report.get("config", {}).get("suites", []) if s in done]
    cfg = report.get("config", {})
    st.caption(f"{len(report.get('rows', []))} figures · {cfg.get('level', 0.95):.0%} bootstrap "
               f"intervals ({cfg.get('n_bootstrap')} resamples) · {report.get('n_seeds', 1)} "
               f"training seed(s) · baselines: {', '.join(cfg.get('baselines', [])) or 'none'}")
    for w in report.get("warnings", []):
        st.warning(w)
    if not suites:
        st.info("The report has no suites.")
        return
    tabs = st.tabs([SUITE_TITLES.get(s, s) for s in suites])
    for suite, tab in zip(suites, tabs):
        info = report["suites"].get(suite, {})
        with tab:
            if suite == "absorption" and "spelling_accuracy" in info:
                st.caption(f"The model names the first letter on {info['spelling_accuracy']:.2f} "
                           f"of {info.get('n_spelling_checked')} checked words; absorption "
                           f"measured on: {info.get('source', 'model')}"
                           + (f" ({info['reason']})" if info.get("reason") else ""))
            if suite == "autointerp" and info.get("note"):
                st.warning(info["note"])
            if info.get("skipped"):
                st.info(f"Skipped: {info['skipped']}")
            plot(fig_suite(report, suite), key=f"evals-{suite}")
            if suite == "probing":
                plot(fig_probing_curve(report), key="evals-probing-curve")
            if suite == "absorption":
                t = _table(run, report, "absorption_letters")
                if t:
                    plot(fig_absorption_letters(t), key="evals-letters")
            if suite == "synthetic":
                t = _table(run, report, "synthetic_features")
                if t:
                    plot(fig_recovery(t, info.get("random_expected_max_cos")),
                         key="evals-recovery")
            if suite == "autointerp":
                t = _table(run, report, "autointerp_latents")
                if t:
                    plot(fig_autointerp(t), key="evals-autointerp")
                    st.dataframe({k: t[k] for k in ("subject", "latent", "explanation",
                                                    "detection_accuracy", "fuzzing_accuracy")},
                                 hide_index=True)
    with st.expander("the whole report (report.json)"):
        st.json({k: v for k, v in report.items() if k != "rows"}, expanded=False)
