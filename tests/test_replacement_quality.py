"""Replacement-model quality (circuits/quality.py), long prompts with bounded memory
(circuits/streaming.py) and per-head attention splits (circuits/heads.py), on tiny models with
random TopK transcoders built in the test."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.attribution import AttributionConfig, attribute_replacement
from circuits.replacement import ReplacementModel
from circuits.streaming import StreamedReplacementModel
from circuits.transcoders import TranscoderSet
from saes.architectures import create_sae
from saes.base import SAEConfig

PROMPT = "def f(x): return x + 1 if x else y"


def random_set(model, width: int = 128, k: int = 8, layers=None) -> TranscoderSet:
    d = model.cfg.d_model
    out = {}
    for i in (range(model.cfg.n_layers) if layers is None else layers):
        cfg = SAEConfig(architecture="topk", d_in=d, d_sae=width, k=k, transcoder=True,
                        hook_name=f"blocks.{i}.ln2.hook_normalized",
                        hook_name_out=f"blocks.{i}.hook_mlp_out")
        out[i] = create_sae(cfg, seed=10 + i).eval().requires_grad_(False)
    return TranscoderSet(out, "random-topk")


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request, tiny_llama_dir, tiny_gpt2_dir):
    from interp.models.loading import load_model

    model = load_model(tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir)
    return model, random_set(model)


# ----------------------------------------------------------------------------- long prompts
def test_streamed_graph_equals_the_unstreamed_graph(tiny):
    model, tcs = tiny
    cfg = AttributionConfig(batch_size=16)
    ref = attribute_replacement(ReplacementModel.build(model, tcs, PROMPT), cfg)
    rm = StreamedReplacementModel.build(model, tcs, PROMPT, keep_layers=1)
    got = attribute_replacement(rm, cfg)
    assert torch.equal(got.edge_target, ref.edge_target)
    assert torch.equal(got.edge_source, ref.edge_source)
    assert torch.allclose(got.edge_weight, ref.edge_weight, rtol=1e-6, atol=1e-7)
    for a, b in ((got.node_input, ref.node_input), (got.node_fixed, ref.node_fixed)):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True)
    # bounded: no attention pattern is stored, at most keep_layers are cached
    assert not any(k.endswith(".attn") for k in dict.keys(rm.frozen.values))
    assert rm.frozen.values.n_patterns_held() <= 1 and len(rm.adjoint._layers) <= 1


def test_streamed_graph_with_a_node_budget_equals_the_unstreamed_one(tiny):
    model, tcs = tiny
    cfg = AttributionConfig(batch_size=8, max_feature_nodes=40, update_interval=1)
    ref = attribute_replacement(ReplacementModel.build(model, tcs, PROMPT), cfg)
    got = attribute_replacement(StreamedReplacementModel.build(model, tcs, PROMPT), cfg)
    assert got.n_features == ref.n_features == 40
    assert torch.equal(got.feat_index, ref.feat_index) and torch.equal(got.feat_pos, ref.feat_pos)
    assert torch.allclose(got.edge_weight, ref.edge_weight, rtol=1e-6, atol=1e-7)
    assert got.completeness_error() < 1e-4
