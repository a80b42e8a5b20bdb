"""The feature browser: pick an SAE run, find latents by id or by token, and see each one's top
contexts with per-token highlighting, its activation histogram and its logit effects.

It reads feature pages computed by `saes.features` (the query API); it computes nothing heavy.
"""

from __future__ import annotations

import streamlit as st

from app.ui import empty_workspace, pick_run, run_header, workspace_caption


def feature_browser_page() -> None:
    st.title("Feature browser")
    workspace_caption()
    run = pick_run("sae", "SAE run")
    if run is None:
        empty_workspace("SAE runs")
        return
    run_header(run)
    try:
        import saes.features  # noqa: F401
    except ImportError:
        st.info("Feature pages need `saes.features`, which this installation does not have yet.")
        return
