"""The edge-patching engine, the scores and the curves, on small random task models and the
committed ones, each against a naive reference."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.discovery.context import TinyContext
from circuits.discovery.graph import transformer_graph
from circuits.discovery.scoring import (MIB_FRACTIONS, faithfulness_curve, precision_recall,
                                        roc_auc)
from circuits.tasks.base import TaskBatch
from circuits.tasks.edges import factorised_logits, reference_logits
from circuits.tasks.model import TinyConfig, TinyTransformer


@pytest.fixture(scope="module", params=[0, 24], ids=["attn-only", "mlp"])
def tiny(request):
    torch.manual_seed(0)
    m = TinyTransformer(TinyConfig(n_layers=3, n_heads=3, d_model=24, d_head=8,
                                   d_mlp=request.param, d_vocab=17, n_ctx=9), seed=1).eval()
    m.requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    clean = torch.randint(0, 17, (6, 9), generator=g)
    corrupt = torch.randint(0, 17, (6, 9), generator=g)
    batch = TaskBatch(clean=clean, corrupt=corrupt, answer=torch.randint(0, 17, (6,), generator=g),
                      distractor=torch.randint(0, 17, (6,), generator=g))
    return m, batch


def metric(logits, batch):
    a = logits.gather(-1, batch.answer.expand(*logits.shape[:-2], -1)[..., None]).squeeze(-1)
    d = logits.gather(-1, batch.distractor.expand(*logits.shape[:-2], -1)[..., None]).squeeze(-1)
    return a - d


def test_graph_counts_edges_like_acdc():
    g = transformer_graph(2, 4, mlp=False)
    # q/k/v of 4 heads read the input (layer 0) or the input and 4 heads (layer 1); logits: 9
    assert g.n_edges == 12 * 1 + 12 * 5 + 9 == 81
    gm = transformer_graph(2, 4, mlp=True)
    assert gm.n_edges == 12 + 5 + 12 * 6 + 10 + 11 == 110


def test_clean_masks_reproduce_the_model_and_empty_masks_the_corrupted_run(tiny):
    m, b = tiny
    clean, corrupt = m.sender_outputs(b.clean), m.sender_outputs(b.corrupt)
    E = m.graph.n_edges
    ones = factorised_logits(m, torch.ones(1, E), corrupt, clean)[0]
    zeros = factorised_logits(m, torch.zeros(1, E), corrupt, clean)[0]
    torch.testing.assert_close(ones, m(b.clean)[:, -1], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(zeros, m(b.corrupt)[:, -1], atol=2e-5, rtol=1e-5)


def test_model_is_a_transformer_lens_hooked_transformer(tiny):
    m, b = tiny
    tl = m.to_hooked_transformer()
    torch.testing.assert_close(tl(b.clean), m(b.clean), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("start_layer", [0, 1, 2])
def test_factorised_forward_equals_the_materialised_one(tiny, start_layer):
    m, b = tiny
    clean, corrupt = m.sender_outputs(b.clean), m.sender_outputs(b.corrupt)
    masks = (torch.rand(5, m.graph.n_edges, generator=torch.Generator().manual_seed(3)) > 0.4)
    masks = masks.float()
    if start_layer:  # edges into earlier layers must be clean for a later start
        early = torch.tensor([m.first_layer_of(e) < start_layer for e in range(m.graph.n_edges)])
        masks[:, early] = 1
    a = reference_logits(m, masks, corrupt, clean, start_layer=start_layer)
    f = factorised_logits(m, masks, corrupt, clean, start_layer=start_layer, cache={})
    full = reference_logits(m, masks, corrupt, clean)
    torch.testing.assert_close(f, a, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(f, full, atol=2e-5, rtol=1e-5)


def test_batched_edge_patching_equals_a_per_edge_loop(tiny):
    m, b = tiny
    ctx = TinyContext(m, b, metric)
    effects = ctx.patch_effects("edge")
    clean, corrupt = ctx.clean, ctx.corrupt
    full = metric(reference_logits(m, torch.ones(1, m.graph.n_edges), corrupt, clean), b).mean()
    for e in range(0, m.graph.n_edges, 7):
        mask = torch.ones(1, m.graph.n_edges)
        mask[0, e] = 0
        one = metric(reference_logits(m, mask, corrupt, clean), b).mean()
        assert math.isclose(float(effects[e]), float(full - one), abs_tol=3e-5, rel_tol=1e-4)


def test_node_patching_is_patching_every_outgoing_edge(tiny):
    m, b = tiny
    ctx = TinyContext(m, b, metric)
    node = ctx.patch_effects("node")
    g = m.graph
    for c in range(g.n_components):
        mask = torch.ones(1, g.n_edges)
        mask[0, g.edge_src == g.components[c]] = 0
        assert math.isclose(float(node[c]), ctx.full_metric - float(ctx.metric(mask, "edge")[0]),
                            abs_tol=3e-5)


def test_eap_is_the_mask_gradient_and_a_first_order_patch(tiny):
    m, b = tiny
    ctx = TinyContext(m, b, metric)
    eap = ctx.gradient_scores((1.0,), "inputs")
    torch.testing.assert_close(eap, ctx.gradient_scores((1.0,), "mask"), atol=1e-5, rtol=1e-4)
    # (m(1) - m(1 - eps e)) / eps -> the score
    eps = 1e-3
    for e in (0, m.graph.n_edges // 2, m.graph.n_edges - 1):
        mask = torch.ones(1, m.graph.n_edges, dtype=torch.float64)
        mask[0, e] -= eps
        with torch.no_grad():
            md = m.double()
            c64, k64 = ctx.clean.double(), ctx.corrupt.double()
            fd = (metric(md.masked_logits(torch.ones_like(mask), k64, c64), b).mean()
                  - metric(md.masked_logits(mask, k64, c64), b).mean()) / eps
            m.float()
        assert math.isclose(float(eap[e]), float(fd), rel_tol=2e-2, abs_tol=2e-4)


def test_integrated_mask_gradients_are_complete(tiny):
    """IG's completeness axiom (Sundararajan et al. 2017): the scores of a straight path from
    every edge ablated to every edge clean sum to m(clean) - m(ablated)."""
    m, b = tiny
    ctx = TinyContext(m, b, metric)
    n = 64
    ig = ctx.gradient_scores([(k + 0.5) / n for k in range(n)], "mask")  # midpoint rule
    assert math.isclose(float(ig.sum()), ctx.full_metric - ctx.empty_metric, rel_tol=1e-2)


def naive_curve(ctx, scores, level, fractions):
    """MIB's evaluate_area_under_curve read literally: one circuit at a time."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-abs(float(scores[i])), i))
    fs = []
    for p in fractions:
        keep = torch.zeros(n, dtype=torch.bool)
        keep[order[:int(p * n + 1e-9)]] = True
        if level == "edge":
            keep = ctx.graph.prune(keep)
            em = keep.float()[None]
        else:
            em = ctx.graph.edges_of_components(keep).float()[None]
        logits = reference_logits(ctx.model, em, ctx.corrupt, ctx.clean)
        mm = float(metric(logits, ctx.batch).mean())
        fs.append((mm - ctx.empty_metric) / (ctx.full_metric - ctx.empty_metric))
    cpr = cmd = 0.0
    for i in range(len(fs) - 1):
        dx = fractions[i + 1] - fractions[i]
        cpr += dx * (fs[i] + fs[i + 1]) / 2
        cmd += dx * (abs(1 - fs[i]) + abs(1 - fs[i + 1])) / 2
    return fs, cpr, cmd


@pytest.mark.parametrize("level,grid", [("edge", "mib"), ("node", "every")])
def test_cpr_and_cmd_equal_a_naive_reference(tiny, level, grid):
    m, b = tiny
    ctx = TinyContext(m, b, metric)
    scores = ctx.patch_effects(level)
    curve = faithfulness_curve(ctx, scores, level, grid)
    n = len(scores)
    fractions = list(MIB_FRACTIONS) if grid == "mib" else [k / n for k in range(n + 1)]
    fs, cpr, cmd = naive_curve(ctx, scores, level, fractions)
    assert curve.fractions == pytest.approx(fractions)
    assert curve.faithfulness == pytest.approx(fs, abs=1e-4)
    assert curve.cpr == pytest.approx(cpr, abs=1e-5) and curve.cmd == pytest.approx(cmd, abs=1e-5)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)
    if level == "edge":  # the empty node circuit keeps the input's direct path, as in MIB
        assert curve.faithfulness[0] == pytest.approx(0.0, abs=1e-4)


def test_pruning_removes_exactly_the_dangling_edges(tiny):
    m, _ = tiny
    g = m.graph
    keep = torch.zeros(g.n_edges, dtype=torch.bool)
    name = {n: i for i, n in enumerate(g.edge_names)}
    # a chain input -> a0.h0<v> -> a1.h1<k> -> logits, plus a dangling edge into a0.h1
    for e in ("input->a0.h0<v>", "a0.h0->a1.h1<k>", "a1.h1->logits", "input->a0.h1<q>"):
        keep[name[e]] = True
    pruned = g.prune(keep)
    assert [g.edge_names[i] for i in pruned.nonzero()[:, 0]] == [
        "input->a0.h0<v>", "a0.h0->a1.h1<k>", "a1.h1->logits"]


def test_roc_auc_equals_the_pairwise_count_and_precision_recall():
    torch.manual_seed(0)
    s = torch.randn(40)
    t = torch.rand(40) > 0.6
    pos, neg = s.abs()[t], s.abs()[~t]
    pairs = sum(float(p > q) + 0.5 * float(p == q) for p in pos for q in neg)
    assert roc_auc(s, t) == pytest.approx(pairs / (len(pos) * len(neg)))
    assert roc_auc(t.float(), t) == 1.0 and roc_auc(-(~t).float(), t) == 0.0
    pr = precision_recall(torch.tensor([1, 1, 0, 0], dtype=torch.bool),
                          torch.tensor([1, 0, 1, 0], dtype=torch.bool))
    assert pr["precision"] == 0.5 and pr["recall"] == 0.5 and pr["f1"] == 0.5


def test_board_labels_find_the_square_a_feature_reads():
    from circuits.discovery.dictionary import board_labels

    g = torch.Generator().manual_seed(0)
    boards = torch.randint(-1, 2, (50, 16, 36), generator=g)
    acts = torch.rand(50, 16, 4, generator=g) * 0.1
    acts[..., 2] += (boards[..., 9] == 1).float()  # feature 2 reads "D2 mine" (square 9)
    acts[..., 3] += (boards[..., 35] == 0).float()  # feature 3 reads "F6 empty"
    labels = board_labels({"mlp0": acts}, boards, ["mlp0:f2", "mlp0:f3"])
    assert labels["mlp0:f2"].startswith("D2 mine") and labels["mlp0:f3"].startswith("F6 empty")
