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


def _hooked_logits(hf, ids, handles):
    """The HF model's logits without and with the forward hooks `handles` (removed after)."""
    try:
        with torch.no_grad():
            repl = hf(ids).logits[0].float()
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        real = hf(ids).logits[0].float()
    return real, repl


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


# ----------------------------------------------------------------------------- quality
PROMPTS = ["def f(x): return x + 1", "for i in range(10): print(i)", "a = b * c - d"]


@pytest.fixture(scope="module")
def relu_gpt2(tmp_path_factory):
    """A tiny GPT-2 whose MLP is ReLU, and a standard transcoder set that *is* its MLPs
    (W_enc = c_fc, W_dec = c_proj): reconstruction exact up to float rounding."""
    from transformers import AutoModelForCausalLM

    from interp.models.loading import load_model
    from interp.models.tiny import save_tiny_model, tiny_config

    config = tiny_config("gpt2")
    config.activation_function = "relu"
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    model = load_model(save_tiny_model(tmp_path_factory.mktemp("relu-gpt2"), model=hf))
    d, d_mlp = model.cfg.d_model, model.cfg.d_mlp
    exact, zero = {}, {}
    for i, blk in enumerate(hf.transformer.h):
        cfg = SAEConfig(architecture="standard", d_in=d, d_sae=d_mlp, transcoder=True,
                        hook_name=f"blocks.{i}.ln2.hook_normalized",
                        hook_name_out=f"blocks.{i}.hook_mlp_out")
        tc = create_sae(cfg, seed=i)
        with torch.no_grad():
            tc.enc_weight.copy_(blk.mlp.c_fc.weight.T)
            tc.b_enc.copy_(blk.mlp.c_fc.bias)
            tc.W_dec.copy_(blk.mlp.c_proj.weight)
            tc.b_dec.copy_(blk.mlp.c_proj.bias)
        exact[i] = tc.eval().requires_grad_(False)
        z = create_sae(cfg, seed=i)
        with torch.no_grad():
            for p in z.parameters():
                p.zero_()
        zero[i] = z.eval().requires_grad_(False)
    return model, TranscoderSet(exact, "exact"), TranscoderSet(zero, "zero")


def test_exact_transcoders_score_perfectly_and_zeroed_ones_worse(relu_gpt2):
    from circuits.quality import replacement_quality

    model, exact, zero = relu_gpt2
    good = replacement_quality(model, exact, PROMPTS)
    bad = replacement_quality(model, zero, PROMPTS)
    assert good["top1_agreement"] == 1.0
    assert good["kl_last"] < 1e-8 and good["kl_all"] < 1e-8
    assert all(v < 1e-8 for v in good["nmse"].values())
    assert good["replacement_score"] > 1 - 1e-4 and good["completeness_score"] > 1 - 1e-4
    # the zeroed set predicts nothing: every MLP output is an error node
    assert all(v >= 1.0 for v in bad["nmse"].values())
    assert bad["kl_all"] > 1e-4 and bad["replacement_score"] < good["replacement_score"] - 0.05
    assert bad["completeness_score"] < good["completeness_score"] - 0.05
    for r in (good, bad):
        json_ready = __import__("json").dumps(r)  # JSON-able as returned
        assert "per_prompt" in json_ready and len(r["per_prompt"]) == len(PROMPTS)


def test_quality_scores_are_fractions_and_match_their_definitions(tiny):
    from circuits.attribution import attribute
    from circuits.prune import graph_scores
    from circuits.quality import replacement_quality

    model, tcs = tiny
    rep = replacement_quality(model, tcs, PROMPTS[:2], progress=True)
    for k in ("replacement_score", "completeness_score", "top1_agreement"):
        assert 0.0 <= rep[k] <= 1.0, (k, rep[k])
    assert rep["kl_last"] >= 0 and rep["kl_all"] >= 0
    assert set(rep["nmse"]) == {str(i) for i in tcs.layers}
    assert all(v > 0 and math.isfinite(v) for v in rep["nmse"].values())
    # the means are the graphs' own scores
    ref = [graph_scores(attribute(model, tcs, p))["replacement_score"] for p in PROMPTS[:2]]
    assert rep["replacement_score"] == pytest.approx(sum(ref) / 2, rel=1e-9)


def test_replacement_model_top1_and_kl_against_a_reference(tiny):
    """A naive reference: run the HF model with forward hooks replacing each MLP's output by
    the transcoder's reconstruction (BOS kept), compare top-1 and KL."""
    from circuits.quality import replacement_quality

    model, tcs = tiny
    hf = model.hf_model
    ids = model.to_tokens(PROMPTS[1])[0][0].reshape(1, -1)
    mlps = [blk.mlp for blk in (hf.model.layers if hasattr(hf, "model") else hf.transformer.h)]
    norms = [blk.post_attention_layernorm if hasattr(blk, "post_attention_layernorm") else blk.ln_2
             for blk in (hf.model.layers if hasattr(hf, "model") else hf.transformer.h)]
    handles = []
    for i, (mlp, ln) in enumerate(zip(mlps, norms)):
        def hook(mod, args, out, i=i):
            u = args[0]
            y = tcs[i].decode(tcs[i].encode(u), u)
            y[:, 0] = out[:, 0]
            return y
        handles.append(mlp.register_forward_hook(hook))
    real, repl = _hooked_logits(hf, ids, handles)
    lp, lq = torch.log_softmax(real.double(), -1), torch.log_softmax(repl.double(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)[1:]
    rep = replacement_quality(model, tcs, [PROMPTS[1]], progress=False)
    row = rep["per_prompt"][0]
    assert row["top1_agree"] == (int(real[-1].argmax()) == int(repl[-1].argmax()))
    assert row["kl_last"] == pytest.approx(float(kl[-1]), rel=1e-3, abs=1e-7)
    assert row["kl_mean"] == pytest.approx(float(kl.mean()), rel=1e-3, abs=1e-7)


def test_cli_replacement_quality_writes_report_and_figure(tiny, tmp_path):
    import json

    from typer.testing import CliRunner

    from circuits.plots import fig_replacement_quality
    from interp.cli import app
    from saes.formats.saelens import save_saelens

    model, tcs = tiny
    for i in tcs.layers:
        save_saelens(tcs[i], tmp_path / "set" / f"layer_{i:02d}" / "sae")
    (tmp_path / "prompts.txt").write_text("x = 1\n\ny = x + 2\n")
    res = CliRunner().invoke(app, [
        "replacement-quality", "--model", str(model.hf_model.name_or_path), "--transcoders",
        str(tmp_path / "set"), "--prompts", str(tmp_path / "prompts.txt"), "--prompt", "z = 3",
        "--out", str(tmp_path / "q.json"), "--figure", str(tmp_path / "q.html")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "q.json").read_text())
    assert rep["n_prompts"] == 3 and 0 <= rep["replacement_score"] <= 1
    assert (tmp_path / "q.html").stat().st_size > 1000
    fig = fig_replacement_quality([rep, rep], names=["a", "b"])
    assert len(fig.data) == 4 and list(fig.data[0].x) == [0, 1]
    bad = CliRunner().invoke(app, ["replacement-quality", "--transcoders", str(tmp_path / "set")])
    assert bad.exit_code != 0 and "No prompts" in bad.output
    # the report kept with a graph run (the explorer's graph page shows it)
    res = CliRunner().invoke(app, [
        "attribute", "--model", str(model.hf_model.name_or_path), "--transcoders",
        str(tmp_path / "set"), "--prompt", "z = 3", "--out", str(tmp_path / "graph"),
        "--name", "g", "--quality", str(tmp_path / "q.json")])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "graph" / "run.json").read_text())
    assert run["artefacts"]["replacement_quality"] == "replacement-quality.json"
    assert run["metrics"]["feature_type"] == "per-layer transcoder"
    assert json.loads((tmp_path / "graph" / "replacement-quality.json").read_text()) == rep
    res = CliRunner().invoke(app, [
        "attribute", "--transcoders", str(tmp_path / "set"), "--prompt", "z = 3",
        "--out", str(tmp_path / "graph2"), "--quality", str(tmp_path / "missing.json")])
    assert res.exit_code != 0 and "missing.json" in res.output


# ----------------------------------------------------------------------------- head splits
def test_per_head_terms_sum_to_the_unsplit_edges(tiny):
    from circuits.heads import split_by_head

    model, tcs = tiny
    rm = ReplacementModel.build(model, tcs, PROMPT)
    graph = attribute_replacement(rm, AttributionConfig(batch_size=64, max_feature_nodes=150))
    A = graph.dense(torch.float64)
    top = graph.feat_layer == graph.n_layers - 1
    targets = [int(top.nonzero()[-1]), int((graph.feat_layer == 0).nonzero()[-1]),
               graph.logit_start]
    H = model.cfg.n_heads
    for t in targets:
        s = split_by_head(rm, graph, t)
        assert s.terms.shape == (1 + graph.n_layers * H, graph.logit_start)
        row = A[t, : graph.logit_start]
        scale = float(row.abs().max())
        assert torch.allclose(s.terms.double().sum(0), row, atol=1e-5 * scale, rtol=1e-4)
        # heads above the target's layer carry nothing (sequential blocks: the target's own
        # layer's attention sits below its MLP input); the heads below do carry something
        layer = graph.n_layers - 1 if t >= graph.logit_start else int(graph.feat_layer[t])
        assert not s.terms[1 + (layer + 1) * H:].any()
        assert s.terms[1: 1 + (layer + 1) * H].abs().max() > 0
        # the token at the target's own position reaches it only through no head or any head;
        # an earlier token only through heads (attention moves information between positions)
        pos = graph.n_pos - 1 if t >= graph.logit_start else int(graph.feat_pos[t])
        if pos > 1:
            assert s.terms[0, graph.token_start + pos - 1] == 0
        terms = s.edge(graph.token_start + pos - 1, top=3)
        assert all(k.startswith("L") for k in terms)


@pytest.mark.parametrize("arch", ["gpt_neox", "gemma2"])
def test_head_split_and_streaming_on_parallel_and_post_norm_blocks(arch, tmp_path):
    """GPT-NeoX (attention and MLP in parallel) and Gemma-2 (post norms, soft-capping)."""
    from circuits.heads import split_by_head
    from interp.models.loading import load_model
    from interp.models.tiny import save_tiny_model

    model = load_model(save_tiny_model(tmp_path / arch, arch, seed=0))
    tcs = random_set(model)
    rm = ReplacementModel.build(model, tcs, PROMPT)
    cfg = AttributionConfig(batch_size=64, max_feature_nodes=100)
    graph = attribute_replacement(rm, cfg)
    A = graph.dense(torch.float64)
    for t in (int((graph.feat_layer == 1).nonzero()[-1]), graph.logit_start):
        row = A[t, : graph.logit_start]
        got = split_by_head(rm, graph, t).terms.double().sum(0)
        assert torch.allclose(got, row, atol=1e-5 * float(row.abs().max()), rtol=1e-4)
    streamed = attribute_replacement(StreamedReplacementModel.build(model, tcs, PROMPT), cfg)
    assert torch.allclose(streamed.edge_weight, graph.edge_weight, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- cross-layer
CLT_IN, CLT_OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"


def random_clt(model, layers, per_layer: int = 96, k: int = 6, seed: int = 5):
    """A random TopK cross-layer transcoder over `layers` (every feature writes to its own and
    each later covered layer), wrapped as the replacement model's set."""
    from circuits.clt import CLTSet

    cfg = SAEConfig(architecture="clt", d_in=model.cfg.d_model, d_sae=per_layer * len(layers),
                    k=k, transcoder=True, clt_layers=tuple(layers), hook_name=CLT_IN,
                    hook_name_out=CLT_OUT)
    return CLTSet(create_sae(cfg, seed=seed), "random-clt")


@pytest.fixture(scope="module", params=[(0, 1, 2), (1, 2)], ids=["clt0-2", "clt1-2"])
def tiny_clt(request, tmp_path_factory):
    """A 3-layer tiny Llama and a random CLT over all its layers or the last two (layer 0 then
    all error)."""
    from interp.models.loading import load_model
    from interp.models.tiny import save_tiny_model

    model = load_model(save_tiny_model(tmp_path_factory.mktemp("tiny3"), "llama", seed=2,
                                       n_layers=3))
    return model, random_clt(model, request.param)


def test_streamed_graph_equals_the_unstreamed_graph_through_a_clt(tiny_clt):
    """The streamed decoder vectors of output layer m are every source layer's writes
    a · W_dec^{l->m}: the same graph as the unstreamed replacement model, with and without a
    node budget."""
    model, clt = tiny_clt
    for cfg in (AttributionConfig(batch_size=16),
                AttributionConfig(batch_size=8, max_feature_nodes=30, update_interval=1)):
        rm_ref = ReplacementModel.build(model, clt, PROMPT)
        ref = attribute_replacement(rm_ref, cfg)
        rm = StreamedReplacementModel.build(model, clt, PROMPT, keep_layers=1)
        got = attribute_replacement(rm, cfg)
        assert ref.metadata["feature_type"] == got.metadata["feature_type"] \
            == "cross-layer transcoder"
        # features of a CLT write to later layers: some output layer has more than one source
        assert any(int(rm_ref._dec[m][3].numel()) > int((rm_ref.features.layer == m).sum())
                   for m in rm_ref._dec)
        assert torch.equal(got.feat_index, ref.feat_index)
        assert torch.equal(got.edge_target, ref.edge_target)
        assert torch.equal(got.edge_source, ref.edge_source)
        assert torch.allclose(got.edge_weight, ref.edge_weight, rtol=1e-6, atol=1e-7)
        for a, b in ((got.node_input, ref.node_input), (got.node_fixed, ref.node_fixed)):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True)
        assert got.completeness_error() < 1e-4
        # the streamed model's forward (linear_mlp through the lazy decoder vectors) is the same
        torch.testing.assert_close(rm.forward()["logits"], rm_ref.forward()["logits"])
    assert not any(k.endswith(".attn") for k in dict.keys(rm.frozen.values))
    # no padded [n, kmax, d] decoder tensor is held for any output layer
    assert rm._dec and not any(isinstance(v[0], torch.Tensor) for v in rm._dec.values())


def test_per_head_terms_sum_to_the_unsplit_edges_through_a_clt(tiny_clt):
    from circuits.heads import split_by_head

    model, clt = tiny_clt
    rm = ReplacementModel.build(model, clt, PROMPT)
    graph = attribute_replacement(rm, AttributionConfig(batch_size=64, max_feature_nodes=120))
    A = graph.dense(torch.float64)
    last = graph.feat_layer == graph.n_layers - 1
    targets = [int(last.nonzero()[-1]), int((graph.feat_layer == clt.layers[0]).nonzero()[-1]),
               graph.logit_start]
    H = model.cfg.n_heads
    for t in targets:
        s = split_by_head(rm, graph, t)
        row = A[t, : graph.logit_start]
        # the target reads features of earlier layers, some through their cross-layer writes
        assert row[: graph.n_features].abs().max() > 0 or t != targets[0]
        assert torch.allclose(s.terms.double().sum(0), row,
                              atol=1e-5 * float(row.abs().max()), rtol=1e-4)
        layer = graph.n_layers - 1 if t >= graph.logit_start else int(graph.feat_layer[t])
        assert not s.terms[1 + (layer + 1) * H:].any()


def _clt_hooked_logits(model, clt, ids):
    """Naive reference: HF forward hooks replace each covered MLP's output by the CLT module's
    own decode of the activations encoded so far (later layers zero), BOS kept."""
    hf = model.hf_model
    blocks = hf.model.layers
    n = len(clt.layers)
    acts = [None] * n
    handles = []
    for j, layer in enumerate(clt.layers):
        def hook(mod, args, out, j=j):
            u = args[0][0]
            acts[j] = clt.clt.encode_layer(j, u)
            a = torch.stack([acts[i] if i <= j else torch.zeros_like(acts[j])
                             for i in range(n)], 1)  # [pos, n, F]
            y = clt.clt.decode(a)[:, j].unsqueeze(0)
            y[:, 0] = out[:, 0]
            return y
        handles.append(blocks[layer].mlp.register_forward_hook(hook))
    real, repl = _hooked_logits(hf, ids, handles)
    return real, repl


def test_clt_quality_report_matches_a_naive_reference_and_the_graphs(tiny_clt):
    """On a CLT: top-1 and KL equal HF hooks running the CLT module as the replacement model,
    per-layer NMSE equals the module's forward on the model's own MLP inputs, and the graph
    scores are the CLT graphs' own."""
    from circuits.attribution import attribute
    from circuits.prune import graph_scores
    from circuits.quality import replacement_quality

    model, clt = tiny_clt
    rep = replacement_quality(model, clt, PROMPTS[:2])
    assert rep["feature_type"] == "cross-layer transcoder"
    for k in ("replacement_score", "completeness_score", "top1_agreement"):
        assert 0.0 <= rep[k] <= 1.0, (k, rep[k])
    ref = [graph_scores(attribute(model, clt, p)) for p in PROMPTS[:2]]
    for k in ("replacement_score", "completeness_score"):
        assert rep[k] == pytest.approx(sum(r[k] for r in ref) / 2, rel=1e-9)
    # replacement model: top-1 and KL against the hooked reference
    for p, row in zip(PROMPTS[:2], rep["per_prompt"]):
        ids = model.to_tokens(p)[0][0].reshape(1, -1)
        real, repl = _clt_hooked_logits(model, clt, ids)
        lp, lq = torch.log_softmax(real.double(), -1), torch.log_softmax(repl.double(), -1)
        kl = (lp.exp() * (lp - lq)).sum(-1)[1:]
        assert row["top1_agree"] == (int(real[-1].argmax()) == int(repl[-1].argmax()))
        assert row["kl_last"] == pytest.approx(float(kl[-1]), rel=1e-3, abs=1e-7)
        assert row["kl_mean"] == pytest.approx(float(kl.mean()), rel=1e-3, abs=1e-7)
    # NMSE: the module's forward on every covered layer's true input at once, pooled
    assert set(rep["nmse"]) == {str(i) for i in clt.layers}
    ys, yh = {i: [] for i in clt.layers}, {i: [] for i in clt.layers}
    for p in PROMPTS[:2]:
        rm = ReplacementModel.build(model, clt, p)
        with torch.no_grad():
            y_hat = clt.clt(torch.stack([rm.u[i] for i in clt.layers], 1))
        for j, i in enumerate(clt.layers):
            ys[i].append(rm.mlp_out[i, 1:].double())
            yh[i].append(y_hat[1:, j].double())
    for i in clt.layers:
        y, h = torch.cat(ys[i]), torch.cat(yh[i])
        want = float((y - h).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        assert rep["nmse"][str(i)] == pytest.approx(want, rel=1e-4)


def test_exact_clt_scores_perfectly_like_the_exact_per_layer_set(relu_gpt2):
    """A CLT that is the ReLU model's MLPs (own-layer decoders = c_proj, cross-layer ones
    zero, JumpReLU with a negligible threshold) scores perfectly, and as the exact per-layer
    set does; giving layer 0's features a write to layer 1 breaks it."""
    from circuits.clt import CLTSet
    from circuits.quality import replacement_quality

    model, exact, _ = relu_gpt2
    hf = model.hf_model
    d, d_mlp, L = model.cfg.d_model, model.cfg.d_mlp, model.cfg.n_layers
    cfg = SAEConfig(architecture="clt", d_in=d, d_sae=d_mlp * L, transcoder=True,
                    clt_layers=tuple(range(L)), clt_activation="jumprelu",
                    jumprelu_init_threshold=1e-30, hook_name=CLT_IN, hook_name_out=CLT_OUT)
    clt = create_sae(cfg, seed=0)
    with torch.no_grad():
        for i, blk in enumerate(hf.transformer.h):
            clt.encoders[i].copy_(blk.mlp.c_fc.weight.T)
            clt.enc_biases[i].copy_(blk.mlp.c_fc.bias)
            clt.decoders[i].zero_()
            clt.decoders[i][:, 0].copy_(blk.mlp.c_proj.weight)
            clt.b_dec[i * d:(i + 1) * d].copy_(blk.mlp.c_proj.bias)
    good = replacement_quality(model, CLTSet(clt, "exact-clt"), PROMPTS)
    plt = replacement_quality(model, exact, PROMPTS)
    assert good["top1_agreement"] == 1.0
    assert good["kl_last"] < 1e-8 and good["kl_all"] < 1e-8
    assert all(v < 1e-8 for v in good["nmse"].values())
    assert good["replacement_score"] > 1 - 1e-4 and good["completeness_score"] > 1 - 1e-4
    for k in ("replacement_score", "completeness_score"):
        assert good[k] == pytest.approx(plt[k], abs=1e-5)
    with torch.no_grad():
        clt.decoders[0][:, 1].copy_(torch.randn(d_mlp, d, generator=torch.Generator()
                                                .manual_seed(0)) * 0.05)
    off = replacement_quality(model, CLTSet(clt, "off-clt"), PROMPTS)
    assert off["nmse"]["0"] < 1e-8 < off["nmse"]["1"]
    assert off["kl_all"] > 1e-6 and off["replacement_score"] < good["replacement_score"]
