"""Graph JSON for the Neuronpedia / circuit-tracer graph frontend.

Same top-level keys, node fields and link fields as circuit-tracer's exporter
(`circuit_tracer/utils/create_graph_files.py`, models in `frontend/graph_models.py`), with its
known faults fixed while staying valid:
- error node ids never collide with feature ids (circuit-tracer issue #78: its error id
  `0_{layer}_{pos}` equals the id of layer-0 feature `layer` at `pos`); ours is
  `{layer}_error_{pos}`, and every `jsNodeId` equals its (unique) `node_id`;
- `feature_type` says what the node is ("per-layer transcoder", or "cross-layer transcoder"
  for a graph through a CLT; circuit-tracer writes "cross layer transcoder" for both);
- the metadata says what `influence` means (the cumulative-influence fraction at the node's
  rank, as the frontend expects) and each node also carries its raw influence.
"""

from __future__ import annotations

import time
from pathlib import Path

from circuits.graph import Graph
from circuits.prune import PruneResult, prune_graph
from interp.io import atomic_write_json

FEATURE_TYPE = "per-layer transcoder"
INFLUENCE_MEANING = ("influence: the cumulative fraction of total logit influence reached by all "
                     "nodes ranked at or above this one (circuit-tracer's pruning score; lower "
                     "is more important); influence_raw: the node's own influence on the "
                     "logits, sum_k w A_hat^k with A_hat the row-normalised |adjacency|.")


def cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def node_ids(graph: Graph) -> list[str]:
    """The frontend id of every node, in node order."""
    L1 = graph.n_layers + 1
    ids = [f"{int(l)}_{int(f)}_{int(p)}" for l, p, f in
           zip(graph.feat_layer.tolist(), graph.feat_pos.tolist(), graph.feat_index.tolist())]
    ids += [f"{layer}_error_{p}" for layer in range(graph.n_layers) for p in range(graph.n_pos)]
    ids += [f"E_{t}_{p}" for p, t in enumerate(graph.tokens)]
    ids += [f"{L1}_{int(t)}_{graph.n_pos - 1}" for t in graph.logit_tokens.tolist()]
    return ids


def to_neuronpedia(graph: Graph, slug: str, scan: str | None = None, node_threshold: float = 0.8,
                   edge_threshold: float = 0.98, pruned: PruneResult | None = None) -> dict:
    """The pruned graph as a frontend JSON dict (`metadata`, `qParams`, `nodes`, `links`)."""
    pr = pruned or prune_graph(graph, node_threshold, edge_threshold)
    feature_type = str(graph.metadata.get("feature_type") or FEATURE_TYPE)
    ids = node_ids(graph)
    cum, raw = pr.cumulative_scores.tolist(), pr.influence.tolist()
    act = graph.activation.tolist()
    L1 = graph.n_layers + 1
    nodes, keep = [], pr.node_mask.clone()
    keep_idx = keep.nonzero().flatten().tolist()
    e_mask = pr.edge_mask
    tgt, src = graph.edge_target[e_mask].tolist(), graph.edge_source[e_mask].tolist()
    wts = graph.edge_weight[e_mask].tolist()
    connected = set(tgt) | set(src)
    for i in keep_idx:
        kind = graph.node_kind(i)
        if kind in ("feature", "error") and i not in connected:
            continue
        base = {"node_id": ids[i], "jsNodeId": ids[i], "run_idx": 0, "reverse_ctx_idx": 0,
                "clerp": "", "token_prob": 0.0, "is_target_logit": False}
        if kind == "feature":
            layer, pos, f = (int(graph.feat_layer[i]), int(graph.feat_pos[i]),
                             int(graph.feat_index[i]))
            node = {**base, "feature": cantor(layer, f), "layer": str(layer), "ctx_idx": pos,
                    "feature_type": feature_type, "influence": cum[i], "influence_raw": raw[i],
                    "activation": act[i]}
        elif kind == "error":
            layer, pos = divmod(i - graph.error_start, graph.n_pos)
            node = {**base, "feature": -1, "layer": str(layer), "ctx_idx": pos,
                    "feature_type": "mlp reconstruction error", "influence": cum[i],
                    "influence_raw": raw[i], "activation": None}
        elif kind == "token":
            pos = i - graph.token_start
            node = {**base, "feature": pos, "layer": "E", "ctx_idx": pos,
                    "feature_type": "embedding", "influence": cum[i], "influence_raw": raw[i],
                    "activation": None, "clerp": graph.token_strs[pos]}
        else:
            k = i - graph.logit_start
            p = float(graph.logit_probs[k])
            node = {**base, "feature": int(graph.logit_tokens[k]), "layer": str(L1),
                    "ctx_idx": graph.n_pos - 1, "feature_type": "logit", "token_prob": p,
                    "is_target_logit": k == 0, "influence": None, "activation": None,
                    "clerp": f'Output "{graph.logit_strs[k]}" (p={p:.3f})'}
        nodes.append(node)
    kept = {n["node_id"] for n in nodes}
    links = [{"source": ids[s], "target": ids[t], "weight": w}
             for t, s, w in zip(tgt, src, wts) if ids[s] in kept and ids[t] in kept]
    transcoders = str(graph.metadata.get("transcoders", ""))
    meta = {
        "slug": slug, "scan": scan or str(graph.metadata.get("model", "custom")),
        "transcoder_list": [transcoders] if transcoders else [],
        "prompt_tokens": graph.token_strs, "prompt": graph.prompt,
        "node_threshold": node_threshold, "schema_version": 1,
        "pruning_settings": {"node_threshold": node_threshold, "edge_threshold": edge_threshold},
        "generation_settings": {k: v for k, v in graph.metadata.get("config", {}).items()
                                if k in ("max_n_logits", "desired_logit_prob", "batch_size")},
        "influence_field": INFLUENCE_MEANING,
        "info": {"description": f"Attribution graph through {feature_type}s (interp). "
                                + INFLUENCE_MEANING,
                 "generator": {"name": "interp circuits", "version": "0.1.0", "url": ""},
                 "create_time_ms": int(time.time() * 1000)},
    }
    return {"metadata": meta,
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                        "sg_pos": ""},
            "nodes": nodes, "links": links}


def write_neuronpedia(graph: Graph, path: str | Path, slug: str | None = None, **kw) -> Path:
    """Write `<slug>.json` (frontend format) atomically; returns its path."""
    path = Path(path)
    slug = slug or path.stem
    data = to_neuronpedia(graph, slug, **kw)
    atomic_write_json(path, data)
    return path
