"""Check a graph against models: scale, ablate or clamp features and compare the logit change
with what the graph predicts (the validation of Ameisen et al. 2025, "Circuit Tracing", and
circuit-tracer's `feature_intervention`).

Three models to intervene on, from most to least constrained:
- "constrained": the frozen linear system with every MLP output held fixed, so only direct
  effects remain; the change of every node's input must equal the graph's column exactly
  (circuit-tracer's exactness test, float32 error ~1e-7);
- "replacement": attention and norms frozen, each MLP recomputed through its transcoder (error
  terms held), the intervened features clamped: effects propagate through downstream features;
- `real_model_change`: the unmodified model with only the decoder write changed (attention,
  norms and MLPs all live), the honest end-to-end check.
The graph's prediction (`predicted_change`) propagates the change through its edges in layer
order, a feature's activation moving one-for-one with its pre-activation (exact for small
changes that flip no feature on or off).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from circuits.graph import Graph
from circuits.replacement import ReplacementModel
from interp.errors import InterpError

Intervention = tuple[int, int, int, float]  # (layer, pos, feature index, new activation)


def _feature_ids(rm: ReplacementModel, interventions: Sequence[Intervention]) -> list[int]:
    f = rm.features
    out = []
    for layer, pos, idx, _ in interventions:
        m = (f.layer == layer) & (f.pos == pos) & (f.index == idx)
        hit = m.nonzero().flatten()
        if not len(hit):
            raise InterpError(f"Feature {idx} is not active at layer {layer}, position {pos}; "
                              "interventions act on active features (the graph's nodes).")
        out.append(int(hit[0]))
    return out


@torch.no_grad()
def intervene(rm: ReplacementModel, interventions: Sequence[Intervention],
              mode: str = "replacement") -> dict[str, Tensor]:
    """Set features to new activations; returns `logits` [vocab] at the last position and the
    transcoders' pre-activations `pre` {layer: [pos, d_sae]}, before and after (`*_base`)."""
    if mode not in ("constrained", "replacement"):
        raise InterpError(f"mode must be 'constrained' or 'replacement', not {mode!r}.")
    ids = _feature_ids(rm, interventions)
    acts = rm.features.activation
    scale = torch.ones(len(rm.features))
    for i, (_, _, _, value) in zip(ids, interventions):
        scale[i] = value / float(acts[i])
    clamp = {(int(rm.features.layer[i]), int(rm.features.pos[i]), int(rm.features.index[i])): v
             for i, (*_, v) in zip(ids, interventions)}

    acts: dict[int, Tensor] = {}  # this run's (re-encoded, clamped) activations so far

    def replacement_mlp(layer: int, u: Tensor) -> Tensor:
        if layer in rm.tc:
            a = rm.tc.encode(layer, u)
            a[: rm.first] = 0
            for (cl, cp, cf), v in clamp.items():
                if cl == layer:
                    a[cp, cf] = v
            acts[layer] = a
        if not rm.tc.writes_at(layer):
            return rm.mlp_out[layer]
        written = sum(acts[s] @ rm.tc.dec_matrix(s, layer) for s in rm.tc.sources_of(layer))
        return written + rm.errors[layer] + rm._fixed_mlp(layer) + rm.skip(layer, u)

    if mode == "constrained":
        run = rm.forward(mlp=lambda i, u: rm.linear_mlp(i, u, scale=scale))
        base = rm.forward()
    else:
        run = rm.forward(mlp=replacement_mlp)
        clamp.clear()
        base = rm.forward(mlp=replacement_mlp)
    pre = {i: rm.tc.pre_acts(i, run["u"][i]) for i in rm.tc.layers}
    pre_base = {i: rm.tc.pre_acts(i, base["u"][i]) for i in rm.tc.layers}
    return {"logits": run["logits"][-1], "logits_base": base["logits"][-1], "pre": pre,
            "pre_base": pre_base}


def demeaned_change(out: dict[str, Tensor], tokens: Tensor) -> Tensor:
    """Change of (logit - mean logit) for `tokens`, from an `intervene` result."""
    a, b = out["logits"], out["logits_base"]
    return (a[tokens] - a.mean()) - (b[tokens] - b.mean())


def predicted_change(graph: Graph, scales: dict[int, float], propagate: bool = True) -> Tensor:
    """The graph's prediction of every node's input change when feature nodes `scales`
    ({node: factor}) are scaled. `propagate=False`: direct effects only (the constrained
    model). Returns [n_nodes] (float64); logit nodes hold the demeaned-logit change."""
    delta = torch.zeros(graph.n_nodes, dtype=torch.float64)  # relative activation change
    for node, factor in scales.items():
        if graph.node_kind(node) != "feature":
            raise InterpError(f"Node {node} is a {graph.node_kind(node)} node; scale features.")
        delta[node] = factor - 1.0
    tgt, src, w = graph.edge_target, graph.edge_source, graph.edge_weight.double()
    if not propagate:
        return torch.zeros_like(delta).index_add_(0, tgt, w * delta[src])
    change = torch.zeros_like(delta)
    act = graph.activation.double()
    is_feat_tgt = tgt < graph.n_features
    tgt_layer = graph.feat_layer[tgt.clamp_max(max(graph.n_features - 1, 0))]
    for layer in range(graph.n_layers):
        m = is_feat_tgt & (tgt_layer == layer)
        c = torch.zeros_like(delta).index_add_(0, tgt[m], w[m] * delta[src[m]])
        nodes = (graph.feat_layer == layer).nonzero().flatten()
        change[nodes] = c[nodes]
        free = [i for i in nodes.tolist() if i not in scales]
        delta[free] = c[free] / act[free]
    final = torch.zeros_like(delta).index_add_(0, tgt, w * delta[src])
    change[graph.logit_start:] = final[graph.logit_start:]
    return change


@torch.no_grad()
def real_model_change(model, rm: ReplacementModel, interventions: Sequence[Intervention],
                      tokens: Tensor) -> Tensor:
    """Demeaned-logit change of `tokens` in the real model (nothing frozen) when each feature's
    decoder writes at `hook_mlp_out` (every layer it writes to) move to its new activation."""
    ids = _feature_ids(rm, interventions)
    by_layer: dict[int, list[tuple[int, Tensor]]] = {}  # output layer -> writes
    for i, (layer, pos, idx, value) in zip(ids, interventions):
        for out in rm.tc.writes_to(layer):
            d = (value - float(rm.features.activation[i])) * rm.tc.dec_matrix(layer, out)[idx]
            by_layer.setdefault(out, []).append((pos, d))

    def hook_for(layer):
        def fn(x, hook):
            x = x.clone()
            for pos, d in by_layer[layer]:
                x[:, pos] += d.to(x.dtype)
            return x
        return fn

    ids_ = rm.tokens.unsqueeze(0).to(model.device)
    base = model(ids_)[0, -1].float()
    with model.hooks([(f"blocks.{layer}.hook_mlp_out", hook_for(layer)) for layer in by_layer]):
        new = model(ids_)[0, -1].float()
    return (new[tokens] - new.mean()) - (base[tokens] - base.mean())
