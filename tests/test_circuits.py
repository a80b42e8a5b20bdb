"""Attribution graphs (circuits/): exactness against brute force and interventions, completeness,
pruning, export, transcoder loading, the CLI. Transcoders are trained in the test on tiny
models (a TopK set on a Llama, a ReLU skip-transcoder set on a GPT-2)."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.attribution import AttributionConfig, attribute, attribute_replacement
from circuits.export import node_ids, to_neuronpedia
from circuits.graph import Graph
from circuits.interventions import (demeaned_change, intervene, predicted_change,
                                    real_model_change)
from circuits.prune import graph_scores, prune_graph, threshold_value
from circuits.replacement import ReplacementModel
from circuits.transcoders import load_transcoders, train_transcoders
from interp.errors import ConfigError

PROMPT = "def f(x): return x + 1"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def setup(request, tmp_path_factory, tiny_llama_dir, tiny_gpt2_dir):
    from interp.models.loading import load_model

    arch = request.param
    mdir = tiny_llama_dir if arch == "llama" else tiny_gpt2_dir
    out = tmp_path_factory.mktemp(f"tc-{arch}")
    kw = (dict(architecture="topk", k=8) if arch == "llama"
          else dict(architecture="standard", skip=True))
    train_transcoders(str(mdir), [0, 1], out, tokens=8192, width=128, batch_size=512,
                      d_model=64, progress=False, **kw)
    model = load_model(mdir)
    tcs = load_transcoders(out)
    rm = ReplacementModel.build(model, tcs, PROMPT)
    graph = attribute_replacement(rm, AttributionConfig(batch_size=64))
    return model, tcs, rm, graph


def test_frozen_system_reproduces_the_model(setup):
    _, _, rm, graph = setup
    assert rm.freeze_error < 1e-5
    assert graph.n_features > 50 and graph.n_logits >= 1


def test_completeness_each_input_is_its_edges_plus_fixed_terms(setup):
    *_, graph = setup
    scale = float(graph.node_input[~torch.isnan(graph.node_input)].abs().max())
    assert graph.completeness_error() < 1e-5 * max(1.0, scale)


def _brute_force_rows(rm: ReplacementModel, graph: Graph) -> torch.Tensor:
    """One autograd backward per target node, through the plain frozen forward."""
    n, L = rm.n_pos, rm.n_layers
    s_f = torch.ones(len(rm.features), requires_grad=True)
    s_e = torch.ones(L, n, requires_grad=True)
    s_t = torch.ones(n, requires_grad=True)
    out = rm.forward(mlp=lambda i, u: rm.linear_mlp(i, u, scale=s_f, errors=False)
                     + s_e[i, :, None] * rm.errors[i],
                     embed=s_t[:, None] * rm.embeddings())
    targets = []
    for j in range(graph.n_features):
        layer, pos, idx = (int(graph.feat_layer[j]), int(graph.feat_pos[j]),
                           int(graph.feat_index[j]))
        targets.append(rm.tc.pre_acts(layer, out["u"][layer][pos])[idx])
    lg = out["logits"][-1]
    targets += [lg[int(t)] - lg.mean() for t in graph.logit_tokens]
    rows = []
    for y in targets:
        g = torch.autograd.grad(y, [s_f, s_e, s_t], retain_graph=True, allow_unused=True)
        rows.append(torch.cat([x.reshape(-1) if x is not None else torch.zeros(s.numel())
                               for x, s in zip(g, (s_f, s_e, s_t))]))
    return torch.stack(rows)


def test_edges_equal_brute_force_direct_effects(setup):
    _, _, rm, graph = setup
    A = graph.dense()
    n_src = graph.logit_start
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_start, graph.n_nodes)])
    ours = A[rows][:, :n_src]
    brute = _brute_force_rows(rm, graph)
    # BOS-position features/errors are fixed terms, not nodes: zero in both
    brute[:, graph.error_start:graph.token_start].view(-1, rm.n_layers, rm.n_pos)[:, :, 0] = 0
    assert torch.allclose(ours, brute, atol=2e-5, rtol=1e-4), (ours - brute).abs().max()


def test_doubling_a_feature_changes_every_input_by_its_edge(setup):
    """circuit-tracer's exactness test: everything frozen, double one feature, every
    downstream pre-activation and demeaned logit changes by exactly the graph's column."""
    _, _, rm, graph = setup
    A = graph.dense()
    layer0 = (graph.feat_layer == 0).nonzero().flatten()
    picks = layer0[torch.randperm(len(layer0), generator=torch.Generator().manual_seed(0))[:8]]
    worst = 0.0
    for j in picks.tolist():
        layer, pos, idx = (int(graph.feat_layer[j]), int(graph.feat_pos[j]),
                           int(graph.feat_index[j]))
        out = intervene(rm, [(layer, pos, idx, 2 * float(graph.activation[j]))], "constrained")
        for t in range(graph.n_features):
            tl, tp, ti = int(graph.feat_layer[t]), int(graph.feat_pos[t]), int(graph.feat_index[t])
            obs = out["pre"][tl][tp, ti] - out["pre_base"][tl][tp, ti]
            worst = max(worst, abs(float(obs) - float(A[t, j])))
        obs_logit = demeaned_change(out, graph.logit_tokens)
        worst = max(worst, float((obs_logit - A[graph.logit_start:, j]).abs().max()))
        pred = predicted_change(graph, {j: 2.0}, propagate=False)
        assert torch.allclose(pred[graph.logit_start:].float(), obs_logit, atol=1e-5)
    assert worst < 1e-5, worst


def test_graph_predicts_replacement_model_interventions(setup):
    """Scale a feature by 1.1 in the replacement model (attention/norms frozen, downstream
    features recomputed by their transcoders): the logit change matches the graph's
    propagated prediction. (A 1.01 scale moves the logits by ~1e-6 on the GPT-2 set, where
    float32 rounding of the logits alone is ~1e-7.)"""
    _, _, rm, graph = setup
    A = graph.dense()
    logit_rows = A[graph.logit_start:, :graph.n_features].abs().sum(0)
    j = int((logit_rows * (graph.feat_layer == 0)).argmax())
    layer, pos, idx = int(graph.feat_layer[j]), int(graph.feat_pos[j]), int(graph.feat_index[j])
    eps = 0.1
    out = intervene(rm, [(layer, pos, idx, (1 + eps) * float(graph.activation[j]))])
    obs = demeaned_change(out, graph.logit_tokens).double()
    pred = predicted_change(graph, {j: 1 + eps})[graph.logit_start:]
    assert obs.abs().max() > 0
    assert float((obs - pred).abs().max() / obs.abs().max()) < 1e-2, (obs, pred)


def test_real_model_ablation_moves_logits_the_predicted_way(setup):
    model, _, rm, graph = setup
    A = graph.dense()
    j = int(A[graph.logit_start, :graph.n_features].abs().argmax())
    layer, pos, idx = int(graph.feat_layer[j]), int(graph.feat_pos[j]), int(graph.feat_index[j])
    eps = 1e-2
    real = real_model_change(model, rm, [(layer, pos, idx, (1 + eps) * float(graph.activation[j]))],
                             graph.logit_tokens)
    pred = predicted_change(graph, {j: 1 + eps})[graph.logit_start:].float()
    assert torch.sign(real[0]) == torch.sign(pred[0])


def test_node_budget_visits_the_most_influential_features_and_stays_complete(setup):
    _, _, rm, graph = setup
    cap = graph.n_features // 4
    small = attribute_replacement(rm, AttributionConfig(batch_size=16, max_feature_nodes=cap,
                                                        update_interval=1))
    assert small.n_features == cap and small.metadata["n_active_features"] == graph.n_features
    # completeness still holds: dropped features' effects sit in the fixed terms
    scale = float(small.node_input[~torch.isnan(small.node_input)].abs().max())
    assert small.completeness_error() < 1e-5 * max(1.0, scale)
    # the edges kept are the full graph's edges between the same nodes
    key = lambda g, j: (int(g.feat_layer[j]), int(g.feat_pos[j]), int(g.feat_index[j]))  # noqa: E731
    full_id = {key(graph, j): j for j in range(graph.n_features)}
    remap = torch.tensor([full_id[key(small, j)] for j in range(cap)]
                         + list(range(graph.n_features, graph.n_nodes)))
    A_full, A_small = graph.dense(torch.float64), small.dense(torch.float64)
    assert torch.allclose(A_small, A_full[remap][:, remap], atol=1e-6)
    # greedy influence-first: the feature the full graph finds most influential is visited
    top = int(prune_graph(graph).influence[:graph.n_features].argmax())
    assert key(graph, top) in {key(small, j) for j in range(cap)}
    # a budget above the number of active features changes nothing
    same = attribute_replacement(rm, AttributionConfig(batch_size=64,
                                                       max_feature_nodes=graph.n_features))
    assert torch.equal(same.edge_source, graph.edge_source)


def test_threshold_matches_sort_based_selection():
    g = torch.Generator().manual_seed(0)
    for n in (1, 10, 5000):
        s = torch.rand(n, generator=g, dtype=torch.float64) ** 4
        for frac in (0.0, 0.5, 0.8, 0.98, 1.0):
            srt = s.sort(descending=True).values
            cum = srt.cumsum(0) / srt.sum()
            ref = srt[min(int(torch.searchsorted(cum, torch.tensor(frac, dtype=torch.float64))),
                          n - 1)]
            assert float(threshold_value(s, frac, band=16)) == pytest.approx(float(ref))


def _dense_reference_prune(graph: Graph, node_t: float, edge_t: float):
    """circuit-tracer's algorithm on the dense matrix with full sorts (the naive reference)."""
    A = graph.dense(torch.float64)
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[graph.logit_start:] = graph.logit_probs.double()

    def norm(M):
        M = M.abs()
        return M / M.sum(1, keepdim=True).clamp(min=1e-10)

    def infl(M):
        cur = w @ M
        tot = cur.clone()
        while cur.any():
            cur = cur @ M
            tot += cur
        return tot

    def thr(x, t):
        srt = x.sort(descending=True).values
        cum = srt.cumsum(0) / srt.sum()
        return srt[min(int(torch.searchsorted(cum, torch.tensor(t, dtype=torch.float64))),
                       len(srt) - 1)]

    node_inf = infl(norm(A))
    nm = node_inf >= thr(node_inf, node_t)
    nm[graph.token_start:] = True
    P = A.clone()
    P[~nm] = 0
    P[:, ~nm] = 0
    Pn = norm(P)
    es = Pn * (infl(Pn) + w)[:, None]
    em = es >= thr(es.flatten(), edge_t)
    nf, tok = graph.n_features, graph.token_start
    old = nm.clone()
    nm[:tok] &= em[:, :tok].any(0)
    nm[:nf] &= em[:nf].any(1)
    while not torch.equal(nm, old):
        old = nm.clone()
        em[~nm] = False
        em[:, ~nm] = False
        nm[:tok] &= em[:, :tok].any(0)
        nm[:nf] &= em[:nf].any(1)
    return nm, em, node_inf


@pytest.mark.parametrize("node_t,edge_t", [(0.8, 0.98), (0.95, 0.9), (0.99, 0.99)])
def test_sparse_pruning_equals_dense_reference(setup, node_t, edge_t):
    *_, graph = setup
    pr = prune_graph(graph, node_t, edge_t)
    nm, em, node_inf = _dense_reference_prune(graph, node_t, edge_t)
    assert torch.allclose(pr.influence, node_inf, rtol=1e-9, atol=1e-15)
    assert torch.equal(pr.node_mask, nm)
    kept = em[graph.edge_target, graph.edge_source] & nm[graph.edge_target] & nm[graph.edge_source]
    assert torch.equal(pr.edge_mask, kept)
    assert pr.node_mask[graph.token_start:].all()


def test_graph_scores_are_fractions(setup):
    *_, graph = setup
    scores = graph_scores(graph)
    assert 0 < scores["replacement_score"] <= 1 and 0 < scores["completeness_score"] <= 1


def test_neuronpedia_json_ids_are_unique_and_honest(setup):
    *_, graph = setup
    ids = node_ids(graph)
    assert len(set(ids)) == len(ids)
    data = to_neuronpedia(graph, "t", node_threshold=1.0, edge_threshold=1.0)
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    nid = {n["node_id"] for n in data["nodes"]}
    assert len(nid) == len(data["nodes"])
    assert all(link["source"] in nid and link["target"] in nid for link in data["links"])
    types = {n["feature_type"] for n in data["nodes"]}
    assert "per-layer transcoder" in types and "cross layer transcoder" not in types
    assert "cumulative" in data["metadata"]["influence_field"]
    assert {"slug", "scan", "prompt_tokens", "prompt"} <= set(data["metadata"])
    json.dumps(data)


def test_compact_format_round_trip(setup, tmp_path):
    *_, graph = setup
    back = Graph.load(graph.save(tmp_path / "g"))
    assert torch.equal(back.edge_weight, graph.edge_weight)
    assert torch.equal(back.edge_source, graph.edge_source)
    assert back.token_strs == graph.token_strs and back.completeness_error() < 1e-3


def test_topk_transcoder_loads_as_topk_or_fails_loudly(setup, tmp_path):
    _, tcs, *_ = setup
    import shutil

    src = tcs.source
    arch = tcs[0].cfg.architecture
    if arch != "topk":
        pytest.skip("TopK check runs on the TopK set")
    assert tcs[0].cfg.k == 8
    acts = tcs[0].encode(torch.randn(5, 64))
    assert int((acts != 0).sum(-1).max()) <= 8
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "layer_00/sae/cfg.json").read_text())
    cfg["k"] = 3
    (bad / "layer_00/sae/cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="TopK"):
        load_transcoders(bad)


def test_layer_without_transcoder_is_all_error(setup):
    model, tcs, *_ = setup
    from circuits.transcoders import TranscoderSet

    one = TranscoderSet({1: tcs[1]}, source="one")
    graph = attribute(model, one, PROMPT)
    assert (graph.feat_layer == 1).all()
    assert graph.completeness_error() < 1e-4
    err0 = graph.error_node(0, 3)
    assert bool((graph.edge_source == err0).any())


@pytest.mark.slow
def test_default_model_freezes_exactly_and_is_complete(default_model, all_cores):
    """SmolLM2's frozen system reproduces its logits; untrained TopK transcoders at two layers
    still give a complete graph (every other layer is error nodes)."""
    from circuits.transcoders import TranscoderSet
    from saes.architectures import create_sae
    from saes.base import SAEConfig

    tcs = {}
    for layer in (2, 5):
        cfg = SAEConfig(architecture="topk", d_in=576, d_sae=512, k=8, transcoder=True,
                        hook_name=f"blocks.{layer}.ln2.hook_normalized",
                        hook_name_out=f"blocks.{layer}.hook_mlp_out")
        tcs[layer] = create_sae(cfg, seed=layer).eval().requires_grad_(False)
    graph = attribute(default_model, TranscoderSet(tcs, "random"), "The capital of France is")
    assert graph.metadata["freeze_error"] < 1e-4
    scale = float(graph.node_input[~torch.isnan(graph.node_input)].abs().max())
    assert graph.completeness_error() < 1e-4 * max(1.0, scale)


def test_cli_attribute_writes_a_graph_run(setup, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app
    from interp.workspace import load_run

    model, tcs, *_ = setup
    res = CliRunner().invoke(app, ["attribute", "--model", str(model.hf_model.name_or_path),
                                   "--prompt", "x = 1", "--transcoders", tcs.source,
                                   "--out", str(tmp_path / "g"), "--name", "g"])
    assert res.exit_code == 0, res.output
    run = load_run(tmp_path / "g")
    assert run.kind == "graph" and run.status == "done"
    assert run.metrics["completeness_error"] < 1e-3
    data = json.loads(run.artefact("neuronpedia").read_text())
    assert data["metadata"]["slug"] == "g" and data["nodes"]
    from circuits.plots import fig_graph, fig_influence, fig_layer_counts
    from circuits.runs import load_graph_run

    g = load_graph_run(run)
    assert len(fig_graph(g).data) >= 2 and fig_influence(g).data and fig_layer_counts(g).data
