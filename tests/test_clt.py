"""Cross-layer transcoders: training (sparse == dense, bit-exact resume, one store for every
layer), circuit-tracer's file layout, and attribution graphs through a CLT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from interp.caching import cache_activations
from interp.data import CorpusSpec
from interp.errors import ConfigError
from interp.store import StoreConfig
from saes.architectures import check_options, create_sae
from saes.base import SAEConfig
from saes.data import DataConfig
from saes.formats.clt import load_clt, save_clt
from saes.train import TrainConfig, Trainer

N_LAYERS, D = 3, 64
IN, OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"
ACTIVATIONS = ("topk", "batchtopk", "jumprelu")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def clt_cfg(activation="topk", layers=(0, 1, 2), per_layer=32, **kw) -> SAEConfig:
    own = {} if activation == "jumprelu" else {"k": 4}
    return SAEConfig(architecture="clt", d_in=D, d_sae=per_layer * len(layers), transcoder=True,
                     clt_layers=tuple(layers), clt_activation=activation, hook_name=IN,
                     hook_name_out=OUT, **{**own, **kw})


@pytest.fixture(scope="module")
def tiny3_dir(tmp_path_factory):
    from interp.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny3"), "llama", seed=1, n_layers=N_LAYERS)


@pytest.fixture(scope="module")
def tiny3(tiny3_dir):
    from interp.models.loading import load_model

    return load_model(tiny3_dir)


@pytest.fixture(scope="module")
def store_dir(tiny3, tiny3_dir, tmp_path_factory):
    """One store, one pass over the corpus: every layer's MLP input and output."""
    out = tmp_path_factory.mktemp("clt-store")
    hooks = tuple(h.format(layer=i) for i in range(N_LAYERS) for h in (IN, OUT))
    cfg = StoreConfig(model=str(tiny3_dir), hooks=hooks, n_tokens=64 * 96, context_size=64,
                      batch_size=8, shard_windows=32, corpus=CorpusSpec(source="python-docs"))
    cache_activations(out, cfg, model=tiny3, progress=False)
    return out


def tcfg(sae: SAEConfig, **kw) -> TrainConfig:
    base = dict(sae=sae, total_tokens=128 * 24, batch_size=128, checkpoint_every=0, log_every=4,
                dead_tokens=128 * 4, lr=4e-3)
    base.update(kw)
    return TrainConfig(**base)


def weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


# --------------------------------------------------------------------------- the module
@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_sparse_training_step_equals_the_dense_computation(activation):
    """The sparse kernels' loss and every gradient equal the dense top-k CLT's."""
    clt = create_sae(clt_cfg(activation), seed=3)
    clt.select_dtype = None  # the exact selection (bf16 selection: the test below)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, N_LAYERS * D, generator=g), torch.randn(40, N_LAYERS * D, generator=g)
    out = clt.training_loss(x, y)
    out.loss.backward()
    sparse = {k: p.grad.clone() for k, p in clt.named_parameters()}
    clt.zero_grad()
    dense = clt.dense_training_loss(x, y)
    dense.backward()
    torch.testing.assert_close(out.loss, dense, rtol=1e-6, atol=1e-6)
    for k, p in clt.named_parameters():
        torch.testing.assert_close(sparse[k], p.grad, rtol=1e-5, atol=1e-6, msg=k)
    assert all(sparse[f"decoders.{i}"].abs().sum() > 0 and sparse[f"encoders.{i}"].abs().sum() > 0
               for i in range(N_LAYERS))
    # the loss is summed over the output layers: dropping one layer's target changes it
    y2 = y.clone()
    y2[:, -D:] += 1.0
    assert clt.training_loss(x, y2).loss > out.loss


def test_bf16_selection_picks_the_exact_winners_and_values():
    """Selecting in bf16 (where the CPU or GPU multiplies it natively) changes only which
    latents win at near-ties; the winners' values are recomputed in fp32."""
    clt = create_sae(clt_cfg("topk"), seed=3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, N_LAYERS * D, generator=g), torch.randn(40, N_LAYERS * D, generator=g)
    clt.select_dtype = None
    exact = clt.training_loss(x, y).loss
    clt.select_dtype = torch.bfloat16
    for i in range(N_LAYERS):
        enc, b = clt.encoder(i)
        xi = x.view(40, N_LAYERS, D)[:, i].contiguous()
        code, vals = clt._select(xi, enc, b)
        pre = torch.nn.functional.linear(xi, enc, b)
        # values are the fp32 pre-activations of whatever won
        torch.testing.assert_close(vals, pre[code.rows, code.cols], rtol=1e-5, atol=1e-5)
        true = pre.topk(clt.cfg.k, dim=-1).indices
        same = sum(len(set(a.tolist()) & set(c.tolist()))
                   for a, c in zip(code.cols.view(40, -1), true)) / true.numel()
        assert same > 0.9, f"layer {i}: only {same:.2f} of the winners agree"
    torch.testing.assert_close(clt.training_loss(x, y).loss, exact, rtol=0.05, atol=0)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_sparse_decode_equals_dense_and_follows_the_formula(activation):
    """decode (non-zeros only) == decode_dense == sum_{l<=m} W_dec^{l->m} a_l + b_dec^m."""
    clt = create_sae(clt_cfg(activation), seed=4)
    with torch.no_grad():
        clt.b_dec.normal_(generator=torch.Generator().manual_seed(1))
        if activation == "jumprelu":
            clt.log_threshold.fill_(-1.0)
    x = torch.randn(2, 5, N_LAYERS, D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = clt.encode(x)
        assert 0 < (a > 0).float().mean() < 0.9
        sparse, dense = clt.decode(a), clt.decode_dense(a)
        torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
        m = 2  # the last layer reads every layer's latents
        ref = clt.b_dec_layer(m) + sum(a[..., i, :] @ clt.decoder(i)[:, m - i] for i in range(3))
        torch.testing.assert_close(dense[..., m, :], ref, rtol=1e-5, atol=1e-5)
        for i in range(N_LAYERS):  # the per-layer encoder agrees with the stacked one
            torch.testing.assert_close(clt.encode_layer(i, x[..., i, :]), a[..., i, :])


def test_config_errors_say_how_to_fix():
    with pytest.raises(ConfigError, match="contiguous"):
        create_sae(clt_cfg(layers=(0, 2)))
    with pytest.raises(ConfigError, match="divisible"):
        create_sae(SAEConfig(architecture="clt", d_in=D, d_sae=100, transcoder=True,
                             clt_layers=(0, 1, 2), hook_name=IN, hook_name_out=OUT))
    with pytest.raises(ConfigError, match="template"):
        create_sae(SAEConfig(**{**clt_cfg().to_dict(), "hook_name": "blocks.0.x"}))
    with pytest.raises(ConfigError, match="clt_layers"):  # another architecture's setting
        check_options(SAEConfig(architecture="topk", clt_layers=(0, 1)))


# --------------------------------------------------------------------------- training
def test_trains_from_one_store_and_reconstructs_every_layer(store_dir, tmp_path):
    cfg = tcfg(clt_cfg("topk", per_layer=64, k=8), total_tokens=128 * 40)
    t = Trainer(cfg, tmp_path, DataConfig(activations=str(store_dir)), progress=False)
    clt = t.train()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["fvu"] < 0.7 * recs[0]["fvu"]
    assert recs[-1]["l0"] <= 8 * N_LAYERS
    # the unit-norm constraint is on each latent's decoder over every layer it writes to
    torch.testing.assert_close(t.sae.decoder_norms(), torch.ones(64 * N_LAYERS), atol=1e-5,
                               rtol=0)
    # the exported CLT (normalisation folded in) maps raw activations like the trained one
    from interp.store import ActivationStore

    st = ActivationStore(store_dir)
    x = torch.stack([st.activations(IN.format(layer=i), split="eval")[:50]
                     for i in range(N_LAYERS)], 1)
    with torch.no_grad():
        torch.testing.assert_close(clt(x), t.sae(x * t.scale_in) / t.scale_out,
                                   atol=1e-4, rtol=1e-4)
    back = load_clt(tmp_path / "sae")
    assert all(torch.equal(a, b) for a, b in zip(weights(clt).values(), weights(back).values()))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_resume_is_bit_exact(store_dir, tmp_path, activation):
    cfg = tcfg(clt_cfg(activation))
    data = DataConfig(activations=str(store_dir))
    whole = Trainer(cfg, tmp_path / "a", data, progress=False)
    whole.train()
    first = Trainer(cfg, tmp_path / "b", data, progress=False)
    assert first.train(stop_after=9) is None and first.step == 9
    second = Trainer(cfg, tmp_path / "b", data, progress=False)
    assert second.resumed and second.step == 9
    second.train()
    a, b = weights(whole.sae), weights(second.sae)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(whole.opt.state[p]["exp_avg"], second.opt.state[q]["exp_avg"])
               for p, q in zip(whole.sae.parameters(), second.sae.parameters()))


def _cli(store_dir, out, *extra):
    return [sys.executable, "-m", "interp.cli", "train-clt", "--activations", str(store_dir),
            "--layers", "0-2", "--width", "32", "--k", "4", "--tokens", str(128 * 12),
            "--batch-size", "128", "--checkpoint-every", "0", "--out", str(out), *extra]


def test_cli_trains_a_clt_run(store_dir, tiny3_dir, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    res = CliRunner().invoke(app, _cli(store_dir, tmp_path / "run")[3:])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "done" and run["config"]["sae"]["clt_layers"] == [0, 1, 2]
    clt = load_clt(tmp_path / "run" / "sae")
    assert clt.layers == (0, 1, 2) and clt.n_latents == 32
    from saes.runs import resume_run  # `interp resume` takes it (no single-hook evaluation)

    assert resume_run(tmp_path / "run", progress=False).status == "done"
    assert torch.equal(load_clt(tmp_path / "run" / "sae").decoder(0), clt.decoder(0))
    # the run is a dictionary set `interp attribute` takes as it is
    res = CliRunner().invoke(app, ["attribute", "--transcoders", str(tmp_path / "run"),
                                   "--model", str(tiny3_dir), "--prompt", "def f(x):",
                                   "--out", str(tmp_path / "graph"), "--batch-size", "64"])
    assert res.exit_code == 0, res.output
    js = json.loads((tmp_path / "graph" / "graph.json").read_text())
    assert {n["feature_type"] for n in js["nodes"]} <= {
        "cross-layer transcoder", "mlp reconstruction error", "embedding", "logit"}


@pytest.mark.dist
def test_two_processes_match_one(store_dir, tmp_path):
    single = subprocess.run(_cli(store_dir, tmp_path / "one"), env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", *_cli(store_dir, tmp_path / "two")[2:]],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = load_clt(tmp_path / "one" / "sae"), load_clt(tmp_path / "two" / "sae")
    for (k, x), y in zip(weights(a).items(), weights(b).values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=k)


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_circuit_tracer_layout_round_trips_exactly(tmp_path, activation):
    clt = create_sae(clt_cfg(activation), seed=5)
    with torch.no_grad():
        clt.b_dec.normal_(generator=torch.Generator().manual_seed(3))
        for b in clt.enc_biases:
            b.normal_(generator=torch.Generator().manual_seed(4))
        if activation == "jumprelu":
            clt.log_threshold.normal_(generator=torch.Generator().manual_seed(5))
        if activation == "batchtopk":
            clt.threshold.copy_(torch.tensor([0.1, 0.2, 0.3]))
    save_clt(clt, tmp_path / "c")
    back = load_clt(tmp_path / "c")
    assert back.cfg == clt.cfg
    a, b = weights(clt), weights(back)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # circuit-tracer's names and shapes: W_dec_i [F, n_layers - i, d]
    from safetensors.torch import load_file

    for i in range(N_LAYERS):
        enc = load_file(str(tmp_path / "c" / f"W_enc_{i}.safetensors"))
        dec = load_file(str(tmp_path / "c" / f"W_dec_{i}.safetensors"))
        assert enc[f"W_enc_{i}"].shape == (32, D) and dec[f"W_dec_{i}"].shape == (32, 3 - i, D)
        assert (f"threshold_{i}" in enc) == (activation != "topk")
    # without our cfg.json (a directory made by circuit-tracer) the same function loads
    if activation != "topk":
        (tmp_path / "c" / "cfg.json").unlink()
        ct = load_clt(tmp_path / "c")
        x = torch.randn(7, N_LAYERS, D, generator=torch.Generator().manual_seed(6))
        with torch.no_grad():
            torch.testing.assert_close(ct(x), clt(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- attribution
PROMPT = "def f(x): return x + 1"


@pytest.fixture(scope="module", params=[(0, 1, 2), (1, 2)], ids=["layers0-2", "layers1-2"])
def graph_setup(request, tiny3, store_dir, tmp_path_factory):
    """A CLT trained on the tiny model (all layers, or the last two with layer 0 all error)."""
    from circuits.attribution import AttributionConfig, attribute_replacement
    from circuits.replacement import ReplacementModel
    from circuits.transcoders import load_transcoders

    layers = request.param
    out = tmp_path_factory.mktemp("clt-run")
    cfg = tcfg(clt_cfg("topk", layers=layers, per_layer=64, k=6), total_tokens=128 * 30)
    Trainer(cfg, out, DataConfig(activations=str(store_dir)), progress=False).train()
    tcs = load_transcoders(out)  # a run directory holding a CLT in sae/
    rm = ReplacementModel.build(tiny3, tcs, PROMPT)
    graph = attribute_replacement(rm, AttributionConfig(batch_size=48))
    return tiny3, tcs, rm, graph


def test_clt_errors_are_mlp_out_minus_every_write(graph_setup):
    """Layer m's error node = true MLP output - sum_{l <= m} W_dec^{l->m} a_l - b_dec^m,
    checked against the CLT module's own forward on the layers' inputs."""
    _, tcs, rm, _ = graph_setup
    from circuits.clt import CLTSet

    assert isinstance(tcs, CLTSet) and tcs.kind == "cross-layer transcoder"
    x = torch.stack([rm.u[i] for i in tcs.layers], 1)  # [pos, n, d]
    with torch.no_grad():
        y = tcs.clt(x)
    for j, m in enumerate(tcs.layers):
        torch.testing.assert_close(rm.errors[m, 1:], (rm.mlp_out[m] - y[:, j])[1:], atol=1e-5,
                                   rtol=1e-5)
    for m in set(range(rm.n_layers)) - set(tcs.layers):
        assert torch.equal(rm.errors[m, 1:], rm.mlp_out[m, 1:])


def test_clt_graph_is_complete_and_equals_brute_force(graph_setup):
    """Each node's input = its incoming edges + its fixed term; edges equal one autograd pass
    per target through the frozen forward (a CLT feature's edge sums its writes' effects)."""
    _, _, rm, graph = graph_setup
    assert graph.n_features > 30 and graph.metadata["feature_type"] == "cross-layer transcoder"
    scale = float(graph.node_input[~torch.isnan(graph.node_input)].abs().max())
    assert graph.completeness_error() < 1e-5 * max(1.0, scale)
    n, L = rm.n_pos, rm.n_layers
    s_f = torch.ones(len(rm.features), requires_grad=True)
    s_e = torch.ones(L, n, requires_grad=True)
    s_t = torch.ones(n, requires_grad=True)
    out = rm.forward(mlp=lambda i, u: rm.linear_mlp(i, u, scale=s_f, errors=False)
                     + s_e[i, :, None] * rm.errors[i], embed=s_t[:, None] * rm.embeddings())
    targets = [rm.tc.pre_acts(int(graph.feat_layer[j]), out["u"][int(graph.feat_layer[j])]
                              [int(graph.feat_pos[j])])[int(graph.feat_index[j])]
               for j in range(graph.n_features)]
    lg = out["logits"][-1]
    targets += [lg[int(t)] - lg.mean() for t in graph.logit_tokens]
    brute = []
    for y in targets:
        g = torch.autograd.grad(y, [s_f, s_e, s_t], retain_graph=True, allow_unused=True)
        brute.append(torch.cat([x.reshape(-1) if x is not None else torch.zeros(s.numel())
                                for x, s in zip(g, (s_f, s_e, s_t))]))
    brute = torch.stack(brute)
    brute[:, graph.error_start:graph.token_start].view(-1, L, n)[:, :, 0] = 0
    A = graph.dense()
    rows = torch.cat([torch.arange(graph.n_features),
                      torch.arange(graph.logit_start, graph.n_nodes)])
    ours = A[rows][:, :graph.logit_start]
    assert torch.allclose(ours, brute, atol=2e-5, rtol=1e-4), (ours - brute).abs().max()


def test_clt_interventions_agree_with_the_graph(graph_setup):
    """Constrained (direct effects only): doubling a feature moves every downstream input by
    exactly its column. Replacement model (each layer re-encoded, the CLT writing to every
    later layer): a 10% scale of a first-layer feature moves the logits as the graph predicts.
    Real model: the CLT writes moved at every layer give the predicted sign."""
    from circuits.interventions import (demeaned_change, intervene, predicted_change,
                                        real_model_change)

    model, tcs, rm, graph = graph_setup
    A = graph.dense()
    first = (graph.feat_layer == tcs.layers[0]).nonzero().flatten()
    worst = 0.0
    for j in first[:6].tolist():
        layer, pos, idx = (int(graph.feat_layer[j]), int(graph.feat_pos[j]),
                           int(graph.feat_index[j]))
        out = intervene(rm, [(layer, pos, idx, 2 * float(graph.activation[j]))], "constrained")
        for t in range(graph.n_features):
            tl, tp, ti = (int(graph.feat_layer[t]), int(graph.feat_pos[t]),
                          int(graph.feat_index[t]))
            obs = out["pre"][tl][tp, ti] - out["pre_base"][tl][tp, ti]
            worst = max(worst, abs(float(obs) - float(A[t, j])))
        worst = max(worst, float((demeaned_change(out, graph.logit_tokens)
                                  - A[graph.logit_start:, j]).abs().max()))
    assert worst < 1e-5, worst
    logit_rows = A[graph.logit_start:, :graph.n_features].abs().sum(0)
    # the graph is the linearisation at this prompt's top-k selection: test it on the strongest
    # first-layer feature whose 10% push leaves every later layer's selection as it was (a
    # push across a top-k boundary is a different linear piece, not an error of the graph)
    def on(m, pre):  # layer m's selection
        return tcs.clt.activate(tcs.layers.index(m), pre) > 0

    for j in (logit_rows * (graph.feat_layer == tcs.layers[0])).argsort(descending=True)[:8]:
        j = int(j)
        layer, pos, idx = (int(graph.feat_layer[j]), int(graph.feat_pos[j]),
                           int(graph.feat_index[j]))
        out = intervene(rm, [(layer, pos, idx, 1.1 * float(graph.activation[j]))])
        if all(torch.equal(on(m, out["pre"][m]), on(m, out["pre_base"][m]))
               for m in tcs.layers if m > layer):
            break
    else:
        pytest.fail("every candidate feature's 10% push crossed a top-k boundary")
    obs = demeaned_change(out, graph.logit_tokens).double()
    pred = predicted_change(graph, {j: 1.1})[graph.logit_start:]
    assert obs.abs().max() > 0
    assert float((obs - pred).abs().max() / obs.abs().max()) < 1e-2, (obs, pred)
    real = real_model_change(model, rm, [(layer, pos, idx, 1.01 * float(graph.activation[j]))],
                             graph.logit_tokens)
    pred = predicted_change(graph, {j: 1.01})[graph.logit_start:].float()
    big = int(pred.abs().argmax())
    assert torch.sign(real[big]) == torch.sign(pred[big])


def test_neuronpedia_json_says_cross_layer_transcoder(graph_setup):
    from circuits.export import to_neuronpedia

    *_, graph = graph_setup
    js = to_neuronpedia(graph, "clt-test", node_threshold=1.0, edge_threshold=1.0)
    types = {n["feature_type"] for n in js["nodes"]}
    assert "cross-layer transcoder" in types and "per-layer transcoder" not in types
    assert "cross-layer transcoder" in js["metadata"]["info"]["description"]


@pytest.mark.slow
def test_default_model_clt_graph_is_complete(default_model, all_cores):
    """A small (untrained) TopK CLT over SmolLM2's first three layers: the frozen system
    reproduces the logits and every node's input is its edges plus its fixed term."""
    from circuits.attribution import AttributionConfig, attribute
    from circuits.clt import CLTSet

    cfg = SAEConfig(architecture="clt", d_in=576, d_sae=3 * 256, k=8, transcoder=True,
                    clt_layers=(0, 1, 2), hook_name=IN, hook_name_out=OUT)
    clt = create_sae(cfg, seed=0)
    graph = attribute(default_model, CLTSet(clt, "random-clt"), "The capital of France is",
                      AttributionConfig(batch_size=128))
    assert graph.metadata["freeze_error"] < 1e-4
    assert graph.n_features > 0
    scale = float(graph.node_input[~torch.isnan(graph.node_input)].abs().max())
    assert graph.completeness_error() < 1e-4 * max(1.0, scale)
