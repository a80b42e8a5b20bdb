"""View of a linearisation run (kind "linearise", written by `interp linearise` and
`interp.linearise.runs`): the exactness, the singular value spectrum, the singular vectors decoded
to tokens, each input token's share of the output, the per-layer stable ranks and how the
singular values converged (`interp.linearise.plots`)."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, read_json
from app.ui import guard, plot
from interp.workspace import Run


def render(run: Run) -> None:
    from interp.linearise import plots

    summary = read_json(artefact(run, "summary"), expect=dict)
    m = summary.get("metrics", {})
    pred = summary.get("prediction", [{}])[0]
    st.markdown(
        f"**Prompt** `{''.join(summary.get('tokens', []))}` → next token **{pred.get('token')!r}** "
        f"(p = {pred.get('prob', float('nan')):.3f}). Output site `{summary.get('site')}` at "
        f"position {summary.get('position')}; Σᵢ Jᵢxᵢ reproduces it to a relative error of "
        f"**{m.get('rel_error', float('nan')):.1e}** ({summary.get('dtype')}). "
        f"{summary.get('bias_note', '')}.")
    with guard("the decoded singular vectors"):
        plot(plots.fig_token_decodings(summary), key="decodings")
    with guard("the singular values"):
        plot(plots.fig_singular_values(summary), key="spectrum")
    with guard("the token contributions"):
        plot(plots.fig_contributions(summary), key="contributions")
    if summary.get("layers"):
        with guard("the per-layer ranks"):
            plot(plots.fig_layer_ranks(summary), key="layers")
    if summary.get("krylov"):
        with guard("the Krylov convergence"):
            plot(plots.fig_convergence(summary), key="convergence")
