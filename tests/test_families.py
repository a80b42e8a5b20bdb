"""Every registered model family, on a tiny random-weight model built from its `transformers`
config (no download): the canonical hooks on the three backends and against Hugging Face's own
hidden states, and refusals that name what is supported."""

from __future__ import annotations

import pytest
import torch

from interp.errors import HookNotWritable, UnsupportedModel
from interp.models.families import FAMILIES, family_for, read_net
from interp.models.loading import BACKENDS, load_model
from interp.models.tiny import build_tiny_model, save_tiny_model

TEXTS = ["hello world, this is a test", "def f(x): return x"]


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """{model_type: directory} of a 2-layer tiny model per family (biases perturbed too)."""
    root = tmp_path_factory.mktemp("families")
    return {f: save_tiny_model(root / f, model=build_tiny_model(f, seed=0, perturb_biases=True))
            for f in FAMILIES}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, family_dirs):
    """(model_type, {backend: HookedModel})."""
    f = request.param
    return f, {b: load_model(family_dirs[f], backend=b) for b in BACKENDS}


def test_every_hook_is_readable_and_backends_agree(family):
    name, models = family
    ref = models["torch"]
    names = ref.hook_names()
    assert {"hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern",
            "blocks.0.hook_attn_out", "blocks.0.mlp.hook_in", "blocks.0.hook_mlp_out",
            "blocks.1.hook_resid_post", "ln_final.hook_normalized"} <= set(names), name
    logits_ref, cache_ref = ref.run_with_cache(TEXTS, hooks=names)
    c, P = ref.cfg, ref.to_tokens(TEXTS)[0].shape[1]
    assert cache_ref["blocks.0.attn.hook_pattern"].shape == (2, c.n_heads, P, P)
    assert cache_ref["blocks.0.attn.hook_k"].shape == (2, P, c.n_kv_heads, c.d_head)
    assert cache_ref["blocks.0.attn.hook_z"].shape == (2, P, c.n_heads, c.d_head)
    for n in names:
        assert cache_ref[n].shape[:2] == (2, P) or n.endswith("hook_pattern"), (name, n)
    for backend in ("transformer_lens", "nnsight"):
        model = models[backend]
        assert model.hook_names() == names, (name, backend)
        logits, cache = model.run_with_cache(TEXTS, hooks=names)
        torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
        for n in names:
            torch.testing.assert_close(cache[n], cache_ref[n], atol=1e-5, rtol=1e-5,
                                       msg=f"{name} {backend} {n}")


def test_residual_stream_equals_hf_hidden_states(family):
    _, models = family
    ref = models["torch"]
    L = ref.cfg.n_layers
    ids, _ = ref.to_tokens("a tiny test prompt")
    hidden = ref.hf_model(ids, output_hidden_states=True).hidden_states
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + ["ln_final.hook_normalized"]
    _, cache = ref.run_with_cache(ids, hooks=hooks)
    for i in range(L):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_pre"], hidden[i])
    torch.testing.assert_close(cache["ln_final.hook_normalized"], hidden[L])  # HF's last is normed


def test_writable_hooks_reach_the_output_and_read_only_ones_refuse(family):
    """Every hook of block 0 and outside the blocks: a writable one changes the logits when
    its value is changed (and leaves them alone when it is returned as is); a read-only one
    refuses the edit."""
    name, models = family
    m = models["torch"]
    base = m.forward(TEXTS[0])
    for n in [n for n in m.hook_names() if not n.startswith("blocks.") or n.startswith("blocks.0.")]:
        if not m.hook_points[n].writable:
            with pytest.raises(HookNotWritable), m.hooks([(n, lambda x, hook: x * 2)]):
                m.forward(TEXTS[0])
            continue
        with m.hooks([(n, lambda x, hook: x.clone())]):
            torch.testing.assert_close(m.forward(TEXTS[0]), base, msg=f"{name} {n}")
        with m.hooks([(n, lambda x, hook: x * 1.5 + 0.1)]):
            assert not torch.allclose(m.forward(TEXTS[0]), base), (name, n)


def test_edits_agree_across_backends(family):
    """Edits at fused (sliced) projections, flattened MLP rows and head-split values land in
    the same place on every backend."""
    name, models = family

    def zero_head(x, hook):
        x = x.clone()
        x[:, :, 1] = 0
        return x

    def scale(x, hook):
        return 1.5 * x

    edits = [("blocks.0.attn.hook_v", zero_head), ("blocks.0.mlp.hook_pre", scale),
             ("blocks.0.mlp.hook_in", scale), ("blocks.1.hook_mlp_out", scale)]
    edits = [e for e in edits if e[0] in models["torch"].hook_points]
    assert len(edits) >= 3, name
    plain = models["torch"].forward(TEXTS[0])
    outs = {}
    for b, m in models.items():
        with m.hooks(edits):
            outs[b] = m.forward(TEXTS[0])
    assert not torch.allclose(outs["torch"], plain)
    for b in ("transformer_lens", "nnsight"):
        torch.testing.assert_close(outs[b], outs["torch"], atol=1e-5, rtol=1e-5, msg=f"{name} {b}")


def test_unsupported_kinds_name_what_is_supported():
    from transformers import AutoModelForCausalLM, BertConfig, MixtralConfig

    moe = MixtralConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, num_local_experts=2)
    with pytest.raises(UnsupportedModel, match="mixture-of-experts.*Supported families: gemma"):
        read_net(AutoModelForCausalLM.from_config(moe))
    with pytest.raises(UnsupportedModel, match="encoder-only.*Supported families"):
        family_for(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2))
    from interp.models.torch_backend import TorchHookedModel
    from interp.models.tiny import char_tokenizer

    with pytest.raises(UnsupportedModel, match="backend='transformer_lens'"):
        TorchHookedModel(AutoModelForCausalLM.from_config(moe), char_tokenizer(), "moe")


# ------------------------------------------------------------------ the frozen network
IDS = torch.tensor([0, 40, 73, 80, 80, 83, 12, 87, 83, 86, 80, 72])  # <bos> + "Hello, world"
SITES = ["ln_final.hook_normalized", "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out",
         "blocks.0.hook_resid_post", "blocks.1.mlp.hook_in"]


def _check_frozen_network(model, name: str) -> None:
    """The frozen network reproduces the model's hooks; linearisation (Golden, arXiv
    2505.24293, eq. 2) is exact in float64; its products equal autograd's at every site."""
    from interp.linearise.jacobian import (DetachedJacobian, autograd_jacobian,
                                           reconstruction_error)
    from interp.models.frozen import Frozen, run

    net32 = read_net(model, torch.float32)
    with torch.no_grad():
        ours = run(net32, net32.embed(IDS), Frozen("detach"), SITES)
    hf = getattr(model, "hf_model", model)
    with torch.no_grad():
        hidden = hf(IDS[None], output_hidden_states=True).hidden_states
    torch.testing.assert_close(ours[SITES[0]], hidden[-1][0], atol=1e-5, rtol=1e-5, msg=name)
    if hasattr(model, "run_with_cache"):
        _, cache = model.run_with_cache(IDS[None], hooks=SITES)
        for s in SITES:
            torch.testing.assert_close(ours[s], cache[s][0], atol=1e-5, rtol=1e-5,
                                       msg=f"{name} {s}")
    net = read_net(model, torch.float64)
    x = net.embed(IDS)
    jac = DetachedJacobian(net, x)
    dense = autograd_jacobian(net, x)
    assert reconstruction_error(dense, x, jac.y, jac.bias_term) < 1e-10, name
    assert jac.rel_error() < 1e-10, name
    assert reconstruction_error(autograd_jacobian(net, x, mode="ordinary"), x, jac.y,
                                jac.bias_term) > 1e-3, name  # nothing frozen: not exact
    gen = torch.Generator().manual_seed(0)
    for site in SITES:
        jac = DetachedJacobian(net, x, site=site, position=7)
        ref = autograd_jacobian(net, jac.x, site=site)
        v = torch.randn(3, *jac.x.shape, generator=gen, dtype=torch.float64)
        u = torch.randn(3, jac.y.shape[0], generator=gen, dtype=torch.float64)
        assert torch.allclose(jac.matvec(v), torch.einsum("opi,bpi->bo", ref, v), atol=1e-10)
        assert torch.allclose(jac.rmatvec(u), torch.einsum("opi,bo->bpi", ref, u),
                              atol=1e-10), (name, site)
        assert jac.rel_error() < 1e-10, (name, site)


def test_frozen_network_and_exact_linearisation(family):
    from interp.linearise.analysis import LineariseConfig, linearise

    name, models = family
    model = models["torch"]
    _check_frozen_network(model, name)
    res = linearise(model, LineariseConfig(prompt="Hello, world", k=4, layer_k=2, n_decode=2,
                                           dtype="float64"))
    assert res.summary["metrics"]["rel_error"] < 1e-10, name
    assert res.summary["family"] == name and len(res.summary["layers"]) == 3 * 2
    top = int(model.forward("Hello, world")[0, -1].argmax())
    assert res.summary["prediction"][0]["token_id"] == top, name


@pytest.mark.parametrize("arch,change", [
    ("gpt_neox", {"use_parallel_residual": False}),  # sequential NeoX
    ("phi", {"qk_layernorm": True}),  # per-head QK LayerNorm
    ("gemma2", {"attn_logit_softcapping": None}),
    ("qwen2", {"use_sliding_window": False}),
])
def test_frozen_network_variants(arch, change):
    from transformers import AutoModelForCausalLM

    from interp.models.tiny import tiny_config

    cfg = tiny_config(arch)
    for k, v in change.items():
        setattr(cfg, k, v)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    _check_frozen_network(model, f"{arch} {change}")


def test_frozen_network_refuses_what_it_cannot_freeze():
    from transformers import AutoModelForCausalLM

    from interp.errors import InterpError
    from interp.models.tiny import tiny_config

    cfg = tiny_config("olmo")
    cfg.clip_qkv = 8.0
    with pytest.raises(InterpError, match="clip_qkv"):
        read_net(AutoModelForCausalLM.from_config(cfg))
    cfg = tiny_config("opt")
    cfg.do_layer_norm_before = False
    with pytest.raises(InterpError, match="pre-norm OPT"):
        read_net(AutoModelForCausalLM.from_config(cfg))


# ------------------------------------------------------------------ attribution graphs
def _random_transcoders(model):
    """A TopK transcoder at layer 0 and a TopK skip-transcoder at layer 1, random weights."""
    from circuits.transcoders import TranscoderSet
    from saes.architectures import create_sae
    from saes.base import SAEConfig

    d, tcs = model.cfg.d_model, {}
    for layer in range(model.cfg.n_layers):
        cfg = SAEConfig(architecture="topk", d_in=d, d_sae=96, k=6, transcoder=True,
                        skip=layer == 1, hook_name=f"blocks.{layer}.mlp.hook_in",
                        hook_name_out=f"blocks.{layer}.hook_mlp_out")
        tc = create_sae(cfg, seed=layer)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(10 + layer)
            tc.b_dec.copy_(0.05 * torch.randn(tc.b_dec.shape, generator=gen))
            if tc.W_skip is not None:
                tc.W_skip.copy_(0.1 * torch.randn(tc.W_skip.shape, generator=gen))
        tcs[layer] = tc.eval().requires_grad_(False)
    return TranscoderSet(tcs, "random")


def test_attribution_graph_is_complete_and_edges_match_interventions(family):
    """The replacement model (the frozen network with transcoders at the MLP outputs) freezes
    exactly; each node's input is its edges plus its fixed term; doubling a feature in the
    constrained model moves every target by exactly the graph's edge (circuit-tracer's test)."""
    from circuits.attribution import AttributionConfig, attribute_replacement
    from circuits.interventions import demeaned_change, intervene
    from circuits.replacement import ReplacementModel

    name, models = family
    model = models["torch"]
    rm = ReplacementModel.build(model, _random_transcoders(model), "def f(x): return x + 1")
    assert rm.freeze_error < 1e-4, name
    graph = attribute_replacement(rm, AttributionConfig(batch_size=32))
    assert graph.n_features > 20, name
    scale = float(graph.node_input[~torch.isnan(graph.node_input)].abs().max())
    assert graph.completeness_error() < 1e-4 * max(1.0, scale), name  # float32 round-off
    A = graph.dense()
    layer0 = (graph.feat_layer == 0).nonzero().flatten()
    picks = layer0[torch.randperm(len(layer0), generator=torch.Generator().manual_seed(0))[:3]]
    worst, top = 0.0, float(A.abs().max())
    for j in picks.tolist():
        layer, pos, idx = (int(graph.feat_layer[j]), int(graph.feat_pos[j]),
                           int(graph.feat_index[j]))
        out = intervene(rm, [(layer, pos, idx, 2 * float(graph.activation[j]))], "constrained")
        for t in (graph.feat_layer == 1).nonzero().flatten().tolist():
            tp, ti = int(graph.feat_pos[t]), int(graph.feat_index[t])
            obs = out["pre"][1][tp, ti] - out["pre_base"][1][tp, ti]
            worst = max(worst, abs(float(obs) - float(A[t, j])))
        obs_logit = demeaned_change(out, graph.logit_tokens)
        worst = max(worst, float((obs_logit - A[graph.logit_start:, j]).abs().max()))
    assert worst < 1e-5 * max(1.0, top), (name, worst)


# ------------------------------------------------------------------ any model on library backends
@pytest.fixture(scope="module")
def bloom_dir(tmp_path_factory):
    """A tiny BLOOM model (ALiBi, no family adapter) saved as an HF directory."""
    from transformers import AutoModelForCausalLM, BloomConfig

    from interp.models.tiny import char_tokenizer

    torch.manual_seed(0)
    cfg = BloomConfig(vocab_size=101, hidden_size=64, n_layer=2, n_head=4, bos_token_id=0,
                      eos_token_id=1, pad_token_id=2)
    path = tmp_path_factory.mktemp("bloom")
    AutoModelForCausalLM.from_config(cfg).eval().save_pretrained(str(path))
    char_tokenizer(path)
    return path


@pytest.mark.parametrize("backend,block", [("transformer_lens", "blocks.{}.hook_resid_post"),
                                           ("nnsight", "transformer.h.{}")])
def test_a_model_without_adapter_captures_trains_explains_and_probes(bloom_dir, tmp_path,
                                                                     backend, block):
    """No adapter: the torch backend and the frozen network name the supported families; the
    library backends open it (TransformerLens's names, nnsight's module paths) and capture,
    SAE training, feature statistics and probes run on it."""
    from interp.data import CorpusSpec
    from interp.caching import cache_activations
    from interp.store import ActivationStore, StoreConfig
    from probes.activations import collect, token_set
    from probes.linear import fit_probe
    from saes.base import SAEConfig
    from saes.features import FeatureStatsConfig, feature_stats
    from saes.features.stats import model_batches, unembedding
    from saes.data import DataConfig
    from saes.train import train_sae
    from saes.train_config import TrainConfig

    with pytest.raises(UnsupportedModel, match="Supported families: gemma.*nnsight"):
        load_model(bloom_dir)
    model = load_model(bloom_dir, backend=backend)
    with pytest.raises(UnsupportedModel, match="frozen network.*Supported families"):
        read_net(model)
    hook = block.format(1)
    assert hook in model.hook_names() and model.stop_layer_for([hook]) == 2
    ids, mask = model.to_tokens(TEXTS)
    hidden = model.hf_model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    _, cache = model.run_with_cache(TEXTS, hooks=[block.format(0)], stop_at_layer="auto")
    torch.testing.assert_close(cache[block.format(0)], hidden[1], atol=1e-5, rtol=1e-5)

    store_cfg = StoreConfig(model=str(bloom_dir), hooks=(hook,), n_tokens=1024, context_size=32,
                            batch_size=8, shard_windows=8, backend=backend,
                            corpus=CorpusSpec(source="python-docs"))
    store = cache_activations(tmp_path / "store", store_cfg, model=model, progress=False)
    assert isinstance(store, ActivationStore) and store.manifest["complete"]
    sae_cfg = SAEConfig(architecture="topk", d_in=64, d_sae=32, k=4, hook_name=hook)
    sae = train_sae(TrainConfig(sae=sae_cfg, total_tokens=512, batch_size=128),
                    DataConfig(activations=str(tmp_path / "store"), holdout_every=8),
                    tmp_path / "sae", progress=False)
    stats = feature_stats(sae, model_batches(model, hook, FeatureStatsConfig(n_tokens=256,
                                                                             batch_windows=4),
                                             context_size=32),
                          FeatureStatsConfig(n_tokens=256), progress=False)
    assert stats["n_tokens"] > 0 and stats["count"].sum() > 0
    W_U, gain, centre = unembedding(model)
    assert W_U.shape == (101, 64) and gain is not None and centre
    ts = token_set(model.tokenizer, [f"x{i} = 'a{i}'\n" * 3 for i in range(12)], context_size=24)
    acts = collect(model, ts, [hook], batch_size=4)
    y = (acts.tokens % 2).long()
    res = fit_probe(acts.acts[hook], y, acts.doc, kind="ridge", seed=0)
    assert 0.0 <= res.val_acc <= 1.0


def test_cli_prints_the_families_table():
    import json

    from typer.testing import CliRunner

    from interp.cli import app

    res = CliRunner().invoke(app, ["models", "--families", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["family"]: r for r in json.loads(res.output)}
    assert set(FAMILIES) < set(rows) and rows["gemma2"]["attribution graphs"] == "yes"
    assert rows["any other causal LM"]["linearise"] == "no"
    text = CliRunner().invoke(app, ["models", "--families"]).output
    assert "| gpt_neox | yes |" in text and "module paths" in text
