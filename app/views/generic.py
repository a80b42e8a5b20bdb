"""The view of kinds with no registered view: the run's artefacts (the header already shows
config and metrics)."""

from __future__ import annotations

import streamlit as st

from app.ui import inside, workspace
from interp.workspace import Run


def render(run: Run) -> None:
    if not run.artefacts:
        st.info("This run lists no artefacts.")
        return
    rows = []
    for key, rel in run.artefacts.items():
        try:
            path = run.artefact(key)
            ok = inside(path, workspace()) and path.exists()
            size = path.stat().st_size if ok and path.is_file() else None
        except Exception as e:  # noqa: BLE001
            ok, size, rel = False, None, f"{rel} ({e})"
        rows.append({"artefact": key, "path": str(rel), "present": ok, "bytes": size})
    st.dataframe(rows, hide_index=True)
    st.caption("No page is registered for this kind yet; see app/README.md to add one.")
