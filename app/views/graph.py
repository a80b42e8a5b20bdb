"""View of an attribution-graph run (kind "graph", written by `interp attribute` and
`circuits.runs.graph_run`): the pruned graph, the influence curve and features per layer, all
drawn by `circuits.plots`, with sliders for the pruning thresholds; which dictionaries the graph
ran through (per-layer transcoders or a cross-layer transcoder, the graph's `feature_type`) and,
when the run keeps one, the set's replacement-quality report."""

from __future__ import annotations

import streamlit as st

from app.data import artefact, check_file, read_json
from app.ui import plot
from interp.workspace import Run


def summary(run: Run) -> dict:
    m = run.metrics
    return {k: m.get(k) for k in ("feature_type", "n_tokens", "n_features", "kept_nodes",
                                  "replacement_score", "completeness_score", "top_logit")}


#: how the page names each kind of dictionary set (Neuronpedia's feature_type)
THROUGH = {"per-layer transcoder": "per-layer transcoders (PLTs)",
           "cross-layer transcoder": "a cross-layer transcoder (CLT)"}


def _through(graph) -> str:
    kind = str(graph.metadata.get("feature_type") or "per-layer transcoder")
    layers = graph.metadata.get("transcoder_layers") or []
    where = f" over layers {layers[0]}-{layers[-1]}" if layers else ""
    return f"Through {THROUGH.get(kind, kind)}{where}"


def _quality(run: Run) -> None:
    """The replacement-quality report kept with the run: its scores and its figure."""
    from circuits.plots import fig_replacement_quality

    path = artefact(run, "replacement_quality", required=False)
    if path is None:
        return
    rep = read_json(path, expect=dict)
    st.markdown(f"**Replacement quality of this set** over {rep.get('n_prompts', '?')} prompts "
                f"({rep.get('feature_type') or 'transcoders'})")
    cols = st.columns(5)
    for col, (key, label) in zip(cols, (("replacement_score", "replacement"),
                                        ("completeness_score", "completeness"),
                                        ("top1_agreement", "top-1 agreement"),
                                        ("kl_last", "KL (last)"), ("nmse_mean", "mean NMSE"))):
        v = rep.get(key)
        col.metric(label, f"{v:.3f}" if isinstance(v, (int, float)) else "n/a")
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    nmse = rep.get("nmse")
    if (isinstance(nmse, dict) and all(str(k).isdigit() and num(v) for k, v in nmse.items())
            and num(rep.get("kl_last")) and num(rep.get("kl_all")) and "n_prompts" in rep):
        plot(fig_replacement_quality(rep, names=[THROUGH.get(rep.get("feature_type"), "set")]),
             key="quality")


def _threshold(run: Run, key: str, default: float) -> float:
    """The run's pruning threshold for a slider over [0.5, 1], or `default` if it is not one."""
    v = run.config.get(key, default)
    return float(v) if isinstance(v, (int, float)) and 0.5 <= v <= 1.0 else default


def render(run: Run) -> None:
    from circuits.graph import Graph
    from circuits.plots import fig_graph, fig_influence, fig_layer_counts
    from circuits.prune import prune_graph

    path = artefact(run, "graph", required=False)
    if path is None:
        st.info("This run has no graph yet.")
        return
    read_json(path / "graph.json", expect=dict)  # bounded, before Graph.load reads it whole
    check_file(path / "graph.safetensors")
    graph = Graph.load(path)
    st.markdown(f"**Prompt** `{graph.prompt}` · top logit `{graph.logit_strs[0]}` "
                f"(p={float(graph.logit_probs[0]):.3f}) · {graph.n_features} active features")
    st.caption(_through(graph))
    _quality(run)
    c1, c2 = st.columns(2)
    node_t = c1.slider("node threshold", 0.5, 1.0, _threshold(run, "node_threshold", 0.8), 0.01)
    edge_t = c2.slider("edge threshold", 0.5, 1.0, _threshold(run, "edge_threshold", 0.98), 0.01)
    pr = prune_graph(graph, node_t, edge_t)
    tab_g, tab_i, tab_l = st.tabs(["Graph", "Influence", "Layers"])
    with tab_g:
        plot(fig_graph(graph, pr), key="graph")
    with tab_i:
        plot(fig_influence(graph, pr), key="influence")
    with tab_l:
        plot(fig_layer_counts(graph, pr), key="layers")
    np_json = artefact(run, "neuronpedia", required=False)
    if np_json is not None:
        st.caption(f"Frontend JSON (Neuronpedia / circuit-tracer format): `{np_json}`")
