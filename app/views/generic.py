"""The view of kinds with no registered view: the run's artefacts, whether each is there and
what is wrong with it (the header already shows config and metrics)."""

from __future__ import annotations

import streamlit as st

from app.data import artefact_report
from interp.workspace import Run


def render(run: Run) -> None:
    if not run.artefacts:
        st.info("This run lists no artefacts.")
        return
    rows = artefact_report(run)
    if not any(r["problem"] for r in rows):
        rows = [{k: v for k, v in r.items() if k != "problem"} for r in rows]
    st.dataframe(rows, hide_index=True)
    st.caption("No page is registered for this kind yet; see app/README.md to add one.")
