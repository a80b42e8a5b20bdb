"""Graph runs in the workspace (kind "graph"): attribute a prompt, prune, write every format.

A run directory holds `graph/` (compact: graph.json + graph.safetensors), `<name>.json` (the
Neuronpedia / circuit-tracer frontend format, pruned) and `graph-metadata.json` (the frontend's
index of graphs), with the scores, timings and the dictionaries' `feature_type` (per-layer or
cross-layer transcoder) in `run.json`; and, when given, the transcoder set's replacement-quality
report (`circuits.quality.replacement_quality`) as `replacement-quality.json`.
"""

from __future__ import annotations

import time
from pathlib import Path

from circuits.attribution import AttributionConfig, attribute
from circuits.export import to_neuronpedia
from circuits.graph import Graph
from circuits.prune import graph_scores, prune_graph
from interp.io import atomic_write_json
from interp.workspace import run_context

KIND = "graph"


def graph_run(model, transcoders, prompt: str, name: str, *, out: str | Path | None = None,
              workspace: str | Path | None = None, config: AttributionConfig | None = None,
              node_threshold: float = 0.8, edge_threshold: float = 0.98,
              progress: bool = False, quality: dict | None = None):
    """Attribute `prompt`, prune it and write a "graph" run; returns the run. `quality`: a
    `replacement_quality` report of the same transcoder set, kept with the run (the explorer
    shows its scores next to the graph)."""
    cfg = config or AttributionConfig()
    settings = {"model": model.name, "transcoders": str(getattr(transcoders, "source", transcoders)),
                "prompt": prompt, "attribution": cfg.to_dict(), "node_threshold": node_threshold,
                "edge_threshold": edge_threshold}
    with run_context(KIND, name, settings, root=workspace, path=out) as run:
        t0 = time.perf_counter()
        graph = attribute(model, transcoders, prompt, cfg, progress=progress)
        t_attr = time.perf_counter() - t0
        t0 = time.perf_counter()
        pr = prune_graph(graph, node_threshold, edge_threshold)
        t_prune = time.perf_counter() - t0
        graph.save(run.path / "graph")
        data = to_neuronpedia(graph, name, node_threshold=node_threshold,
                              edge_threshold=edge_threshold, pruned=pr)
        atomic_write_json(run.path / f"{name}.json", data)
        atomic_write_json(run.path / "graph-metadata.json", {"graphs": [data["metadata"]]})
        artefacts = {"graph": "graph", "neuronpedia": f"{name}.json",
                     "graph_metadata": "graph-metadata.json"}
        if quality is not None:
            atomic_write_json(run.path / "replacement-quality.json", quality)
            artefacts["replacement_quality"] = "replacement-quality.json"
        metrics = {"feature_type": graph.metadata.get("feature_type"),
                   "n_tokens": graph.n_pos, "n_features": graph.n_features,
                   "n_edges": int(graph.edge_weight.numel()), "n_logits": graph.n_logits,
                   "kept_nodes": len(data["nodes"]), "kept_links": len(data["links"]),
                   "seconds_attribution": round(t_attr, 3), "seconds_pruning": round(t_prune, 3),
                   "freeze_error": graph.metadata.get("freeze_error"),
                   "completeness_error": graph.completeness_error(),
                   "top_logit": graph.logit_strs[0], "top_prob": float(graph.logit_probs[0]),
                   **graph_scores(graph)}
        run.finish(metrics=metrics, artefacts=artefacts)
    return run


def load_graph_run(run) -> Graph:
    """The graph of a "graph" run (a `Run` or its directory)."""
    from interp.workspace import load_run

    run = load_run(run) if not hasattr(run, "artefact") else run
    return Graph.load(run.artefact("graph"))
