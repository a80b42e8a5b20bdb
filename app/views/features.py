"""The feature browser (kind "features", written by `interp features` / `saes.features`): pick a
latent by id, by token (latents whose top contexts peak on it) or from a sorted table, and see its
top contexts with per-token highlighting, its activation histogram and its logit effects.

Everything is read through `saes.features.FeatureIndex` (DuckDB over the run's Parquet tables,
one row group per page) and drawn by `saes.features.plots`.
"""

from __future__ import annotations

import streamlit as st

from app.data import artefact, check_parquet, read_json
from app.ui import plot
from interp.workspace import Run

TABLE_ROWS = 200  # latents listed per table
ORDERS = {"density": "density", "max activation": "max_act", "mean activation": "mean_act",
          "id": "latent"}


@st.cache_resource(show_spinner="Opening the feature tables ...", max_entries=8)
def _index(path: str, mtime_ns: int):
    from saes.features import FeatureIndex

    return FeatureIndex(path)


def open_index(run: Run):
    """The run's `FeatureIndex`, after checking its files stay inside the workspace and its
    features.json is of bounded size."""
    meta = artefact(run, "features")
    read_json(meta, expect=dict)
    for name in ("latents.parquet", "contexts.parquet", "vocab.parquet"):
        check_parquet(meta.parent / name, what=f"{name} of {run.kind}/{run.name} (re-run "
                                               "`interp features` for this SAE)")
    return _index(str(meta.parent), meta.stat().st_mtime_ns)


def _select_latent(idx) -> int:
    """The latent chosen by id, token search or table; `?latent=N` in the URL preselects one."""
    try:
        start = int(st.query_params.get("latent", 0))
    except ValueError:
        start = 0
    start = min(max(start, 0), idx.n_latents - 1)
    if "latent-id" not in st.session_state:
        st.session_state["latent-id"] = start
    elif not 0 <= st.session_state["latent-id"] < idx.n_latents:  # another run was picked
        st.session_state["latent-id"] = start
    by_id, by_token, by_table = st.tabs(["By id", "By token", "Table"])
    with by_token:
        token = st.text_input("token (exact, or with its surrounding whitespace stripped)",
                              key="latent-token")
        if token:
            hits = idx.search(token, limit=50)
            if not hits:
                st.info(f"No latent peaks on {token!r} in its top contexts.")
            else:
                st.dataframe(hits, hide_index=True)
                pick = st.selectbox("show latent", [h["latent"] for h in hits],
                                    key="latent-token-pick")
                if st.button("show", key="latent-token-show"):
                    st.session_state["latent-id"] = int(pick)
    with by_table:
        c1, c2 = st.columns(2)
        order = c1.selectbox("sort by", list(ORDERS), key="latent-order")
        min_density = c2.number_input("min density", 0.0, 1.0, 0.0, format="%.6f",
                                      key="latent-min-density")
        rows = idx.latents(order_by=ORDERS[order], descending=order != "id",
                           limit=TABLE_ROWS, min_density=min_density)
        st.dataframe(rows, hide_index=True)
        st.caption(f"The first {TABLE_ROWS} latents in this order; pick one by id.")
    with by_id:
        latent = st.number_input(f"latent (0..{idx.n_latents - 1})", 0, idx.n_latents - 1,
                                 key="latent-id")
    if st.query_params.get("latent") != str(latent):
        st.query_params["latent"] = str(latent)
    return int(latent)


def render(run: Run) -> None:
    from saes.features.plots import (contexts_html, fig_activation_histogram, fig_density_all,
                                     fig_logit_effects)

    idx = open_index(run)
    meta = idx.meta
    st.markdown(f"**{idx.n_latents} latents** at `{meta.get('hook', '?')}` of "
                f"`{meta.get('model', '?')}`, over {meta.get('n_tokens', '?')} tokens")
    with st.expander("density of every latent", expanded=False):
        plot(fig_density_all(idx.log10_densities()), key="density-all")
    latent = _select_latent(idx)
    page = idx.page(latent)
    st.subheader(f"Latent {latent}")
    cols = st.columns(5)
    for col, (k, v) in zip(cols, [("density", page.density), ("firing tokens", page.count),
                                  ("mean act", page.mean_act), ("max act", page.max_act),
                                  ("q90", page.quantiles.get("q90"))]):
        col.metric(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    st.markdown("**Top contexts** (each token shaded by this latent's activation; the "
                "activating token in bold)")
    if page.contexts:
        st.html('<div style="overflow-x:auto">' + contexts_html(page) + "</div>")
    else:
        st.info("This latent never fired on the tokens read: no contexts.")
    left, right = st.columns(2)
    with left:
        plot(fig_activation_histogram(page), key="act-hist")
    with right:
        if page.top_logits or page.bottom_logits:
            plot(fig_logit_effects(page), key="logits")
        else:
            st.info("No logit effects (the dictionary's output is not the residual stream's "
                    "width, or they were not computed).")
