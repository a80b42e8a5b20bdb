"""View of a layer-geometry run (kind "geometry", written by `interp geometry` and
`probes.runs.geometry_run`): LLM-Microscope linearity per layer, intrinsic dimension and
anisotropy, and per-token nonlinearity for the first tokens (`probes.plots`)."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import guard, plot
from interp.workspace import Run


def render(run: Run) -> None:
    from probes.plots import fig_geometry, fig_linearity, fig_token_nonlinearity

    rows = read_json(artefact(run, "layers"), expect=dict).get("rows", [])
    plot(fig_linearity(rows), key="linearity")
    plot(fig_geometry(rows), key="geometry")
    with guard("the token nonlinearity"):
        example = read_json(artefact(run, "example"), expect=dict)
        plot(fig_token_nonlinearity(example), key="token-nonlin")
    with st.expander("per-layer table"):
        st.dataframe(rows, hide_index=True)
