"""The evaluation-suite part of the SAE page (`app/views/sae.py`'s "Suite" tab): the report of
`interp eval-sae RUN --suite ...` (the run's `evals` artefact, `evals/report.json` and its
Parquet tables, read through `app.data`), one tab per suite, every figure drawn by
`saes.evals.plots.suite_figures` with its interval and the baselines beside the SAE; warnings
(SCR/TPP reliability, placeholder auto-interpretability) shown above the figures."""

from __future__ import annotations

import streamlit as st

from app.data import suite_report, suite_table
from app.ui import plot
from interp.workspace import Run

SUITE_TITLES = {"core": "Core", "probing": "Sparse probing", "absorption": "Absorption",
                "synthetic": "Synthetic", "autointerp": "Auto-interp", "scr": "SCR",
                "tpp": "TPP"}
COMMAND = "core,probing,absorption,synthetic,autointerp"


def render(run: Run) -> None:
    from saes.evals.plots import suite_figures

    report = suite_report(run)
    if report is None:
        st.info(f"No evaluation suite yet: run `interp eval-sae {run.path} --suite {COMMAND}`.")
        return
    done = report.get("suites") if isinstance(report.get("suites"), dict) else {}
    cfg = report.get("config") if isinstance(report.get("config"), dict) else {}
    suites = [s for s in cfg.get("suites", []) if s in done]
    st.caption(f"{len(report['rows'])} figures · {cfg.get('level', 0.95):.0%} bootstrap "
               f"intervals ({cfg.get('n_bootstrap')} resamples) · {report.get('n_seeds', 1)} "
               f"training seed(s) · baselines: {', '.join(cfg.get('baselines', [])) or 'none'}")
    for w in report.get("warnings", []):
        st.warning(w)
    if not suites:
        st.info("The report has no suites.")
        return
    tabs = st.tabs([SUITE_TITLES.get(s, s) for s in suites])
    for suite, tab in zip(suites, tabs):
        info = done.get(suite, {})
        with tab:
            if suite == "absorption" and "spelling_accuracy" in info:
                st.caption(f"The model names the first letter on {info['spelling_accuracy']:.2f} "
                           f"of {info.get('n_spelling_checked')} checked words; absorption "
                           f"measured on: {info.get('source', 'model')}"
                           + (f" ({info['reason']})" if info.get("reason") else ""))
            if info.get("note"):
                st.warning(info["note"])
            if info.get("skipped"):
                st.info(f"Skipped: {info['skipped']}")
            tables: dict[str, dict | None] = {}

            def table(name: str) -> dict | None:
                if name not in tables:
                    tables[name] = suite_table(run, report, name)
                return tables[name]

            for name, fig in suite_figures(report, suite, table).items():
                plot(fig, key=f"evals-{name}")
            latents = tables.get("autointerp_latents")
            if latents:
                st.dataframe({k: latents[k] for k in ("subject", "latent", "explanation",
                                                      "detection_accuracy", "fuzzing_accuracy")
                              if k in latents}, hide_index=True)
    with st.expander("the whole report (report.json)"):
        st.json({k: v for k, v in report.items() if k != "rows"}, expanded=False)
