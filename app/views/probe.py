"""View of a linear-probe run (kind "probe", written by `interp probe` and
`probes.runs.probe_run`): validation accuracy per layer beside the control task and the majority
baseline (`probes.plots.fig_probe_curve`), and the per-layer table."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import guard, plot
from interp.workspace import Run


def render(run: Run) -> None:
    from probes.plots import fig_probe_curve

    layers = read_json(artefact(run, "layers"), expect=dict)
    counts = dict(zip(layers.get("classes", []), layers.get("class_counts", [])))
    st.markdown(f"**Task** `{layers.get('task', '?')}` · probe `{run.config.get('kind', '?')}` · "
                f"control `{run.config.get('control', '?')}` · split by document")
    if counts:
        st.caption("labelled tokens per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    plot(fig_probe_curve(layers), key="probe-curve")
    with guard("the per-layer table"):
        st.dataframe(layers.get("rows", []), hide_index=True)
