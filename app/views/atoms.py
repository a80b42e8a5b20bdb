"""View of an atoms run (kind "atoms", written by `interp atoms` / `saes.atoms.runs.atoms_run`):
the neurons / features / atoms table with R^2 and q*, the Euclidean vs AIP angle histograms and
the per-unit coherence histograms of one hook, all drawn by `saes.atoms.plots`."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import plot
from interp.workspace import Run

Q_FORMS = ("quantile", "per_unit", "per_sample")


def render(run: Run) -> None:
    from saes.atoms.plots import (fig_angle_histograms, fig_atoms_comparison,
                                  fig_coherence_histogram)

    table = read_json(artefact(run, "table"), expect=list)
    if not table:
        st.info("The comparison table is empty.")
        return
    form = st.radio("q* form", Q_FORMS, horizontal=True,
                    help="quantile: sup{q : mu_q < 1/(2K_q-1)}; per_unit: units with "
                         "mu_j < 1/(2 mean L0 - 1); per_sample: samples whose active units all "
                         "pass (see saes/atoms/coherence.py).")
    plot(fig_atoms_comparison(table, q_form=form), key="atoms-comparison")
    st.dataframe(table, use_container_width=True)
    hooks = list(dict.fromkeys(r["hook"] for r in table))
    hook = st.selectbox("Hook", hooks)
    angles = read_json(artefact(run, "angles"), expect=dict).get(hook)
    if angles:
        plot(fig_angle_histograms(angles, f"{hook}: Euclidean vs AIP angles"), key="angles")
    path = artefact(run, "coherence", required=False)
    if path is not None:
        from safetensors.torch import load_file

        mus = load_file(str(path))
        rows = {r["basis"]: r for r in table if r["hook"] == hook}
        k = rows.get("atoms", {}).get("l0_mean")
        plot(fig_coherence_histogram({b: mus[f"{hook}/{b}"] for b in rows
                                      if f"{hook}/{b}" in mus},
                                     bound=1 / (2 * k - 1) if k and k >= 1 else None),
             key="coherence")
