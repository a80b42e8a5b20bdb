"""The ground-truth circuit of a trained task model, by exhaustive ablation.

Components (heads, MLPs): every subset S of the components is kept while all others are
ablated, under both resample ablation (counterfactual prompts) and mean ablation; the ground
truth is the smallest subset whose faithfulness f(S) = (m(S) - m(empty)) / (m(M) - m(empty))
reaches `keep` under BOTH ablations (ties: the larger worst-case f). With <= 16 components
that is at most 65,536 masked runs, batched. The ablation check asks the converse too:
ablating the ground truth (everything else kept) leaves at most `remove` of the behaviour
under both ablations, i.e. the circuit is necessary as well as sufficient.

Edges: inside the ground-truth components' subgraph, edges are dropped greedily, least
important first (by their single-edge resample patching effect), while f stays >= `keep`
under both ablations; what is left is the edge ground truth.
"""

from __future__ import annotations

import logging

import torch

from circuits.discovery.context import ABLATIONS, TinyContext
from interp.errors import ConfigError

log = logging.getLogger(__name__)
MAX_EXHAUSTIVE = 16


def all_subsets(n: int) -> torch.Tensor:
    """Every boolean mask over n items, [2^n, n], in order of the binary numbers."""
    if n > MAX_EXHAUSTIVE:
        raise ConfigError(f"{n} components are too many for an exhaustive search "
                          f"(at most {MAX_EXHAUSTIVE}).")
    bits = torch.arange(2 ** n)[:, None] >> torch.arange(n)[None, :]
    return (bits & 1).bool()


def find_ground_truth(model, task, n_prompts: int = 128, seed: int = 2024, keep: float = 0.9,
                      remove: float = 0.5) -> dict:
    """The ground truth of `model` on `task` and its ablation check (see the module doc)."""
    batch = task.batch(n_prompts, seed)
    ctxs = {ab: TinyContext(model, batch, task.metric, ab) for ab in ABLATIONS}
    g = model.graph
    subsets = all_subsets(g.n_components)
    f = torch.stack([ctxs[ab].faithfulness(subsets, "node") for ab in ABLATIONS])  # [2, 2^C]
    worst = f.min(0).values
    ok = worst >= keep
    if not ok.any():
        raise ConfigError("No subset of components keeps the behaviour; is the model trained?")
    size = subsets.sum(1).float()
    key = torch.where(ok, size - 0.5 * worst.clamp(0, 1), torch.full_like(size, float("inf")))
    best = int(key.argmin())
    truth = subsets[best]
    kept = {ab: float(f[i, best]) for i, ab in enumerate(ABLATIONS)}
    removed = {ab: float(ctxs[ab].faithfulness((~truth)[None], "node")[0]) for ab in ABLATIONS}
    edges = _edge_truth(ctxs, g.edges_of_components(truth), keep)
    edge_f = {ab: float(ctxs[ab].faithfulness(edges[None].float(), "edge")[0])
              for ab in ABLATIONS}
    return {
        "components": [g.component_names[c] for c in range(g.n_components) if truth[c]],
        "edges": [g.edge_names[e] for e in range(g.n_edges) if edges[e]],
        "faithfulness_kept": kept, "faithfulness_removed": removed,
        "faithfulness_edges": edge_f, "keep": keep, "remove": remove,
        "passes": all(v >= keep for v in kept.values())
                  and all(v <= remove for v in removed.values()),
        "n_prompts": n_prompts, "seed": seed,
        "metric_full": {ab: ctxs[ab].full_metric for ab in ABLATIONS},
        "metric_empty": {ab: ctxs[ab].empty_metric for ab in ABLATIONS},
    }


def _edge_truth(ctxs: dict, start: torch.Tensor, keep: float) -> torch.Tensor:
    mask = start.clone()
    effects = ctxs["resample"].patch_effects("edge").abs()
    for e in sorted(mask.nonzero()[:, 0].tolist(), key=lambda e: float(effects[e])):
        trial = mask.clone()
        trial[e] = False
        worst = min(float(c.faithfulness(trial[None].float(), "edge")[0]) for c in ctxs.values())
        if worst >= keep:
            mask = trial
    return mask
