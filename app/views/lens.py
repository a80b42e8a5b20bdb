"""View of a lens run (kind "lens", written by `interp lens` and `probes.runs.lens_run`): KL to
the model's output and next-token error per layer for the logit lens (with and without the final
norm) and the tuned lens, and one text under each lens, layer by position (`probes.plots`)."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import guard, plot
from interp.workspace import Run


def render(run: Run) -> None:
    from probes.plots import LENS_VARIANTS, fig_lens_error, fig_lens_heatmap, fig_lens_kl

    rows = read_json(artefact(run, "layers"), expect=dict).get("rows", [])
    tab_kl, tab_err, tab_example = st.tabs(["KL per layer", "Prediction error", "Example text"])
    with tab_kl:
        plot(fig_lens_kl(rows), key="lens-kl")
    with tab_err:
        plot(fig_lens_error(rows), key="lens-error")
    with tab_example, guard("the example text"):
        example = read_json(artefact(run, "example"), expect=dict)
        labels = dict(LENS_VARIANTS)
        variant = st.radio("lens", [v for v in labels if v in example],
                           format_func=labels.get, horizontal=True)
        plot(fig_lens_heatmap(example, variant), key=f"lens-heatmap-{variant}")
