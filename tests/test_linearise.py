"""Exact Jacobian linearisation (Golden, arXiv 2505.24293): y = Σ_i J⁺_i x_i with the detached
forward pass, on tiny Llama-, GPT-2- and Gemma-3-style models, and on the default model (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from interp.linearise.analysis import LineariseConfig, linearise
from interp.linearise.jacobian import DetachedJacobian, autograd_jacobian, reconstruction_error
from interp.linearise.svd import block_krylov_svd, dense_svd, randomized_svd
from interp.models.families import read_net
from interp.models.frozen import FINAL, Frozen, run

IDS = torch.tensor([0, 40, 73, 80, 80, 83, 12, 87, 83, 86, 80, 72])  # <bos> + "Hello, world"
SITES = [FINAL, "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.0.hook_resid_post"]


def _gemma():
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        query_pre_attn_scalar=16, pad_token_id=2, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():  # norms start at 1 + 0: perturb them so the test sees them
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tiny_models(tiny_llama, tiny_gpt2_dir):
    from interp.models.loading import load_model

    return {"llama": tiny_llama, "gpt2": load_model(tiny_gpt2_dir), "gemma3_text": _gemma()}


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma3_text"])
def family(request, tiny_models):
    return request.param, tiny_models[request.param]


def _hf_final(model, ids):
    hf = getattr(model, "hf_model", model)
    with torch.no_grad():
        out = hf(ids[None], output_hidden_states=True)
    return out.hidden_states[-1][0]


def test_forward_matches_the_model(family):
    name, model = family
    net = read_net(model, torch.float32)
    with torch.no_grad():
        ours = run(net, net.embed(IDS), Frozen("detach"))[FINAL]
    ref = _hf_final(model, IDS)
    assert net.family == name
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    # detaching changes no value: the detached and the ordinary forward agree bit for bit
    with torch.no_grad():
        plain = run(net, net.embed(IDS), Frozen("ordinary"))[FINAL]
    assert torch.equal(ours, plain)


def test_intermediate_sites_match_hooks(tiny_llama):
    net = read_net(tiny_llama, torch.float32)
    hooks = ["blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    _, cache = tiny_llama.run_with_cache(IDS[None], hooks=hooks)
    with torch.no_grad():
        ours = run(net, net.embed(IDS), Frozen("detach"), hooks)
    for h in hooks:
        assert torch.allclose(ours[h], cache[h][0], atol=1e-5), h


def test_detached_jacobian_is_exact_and_ordinary_is_not(family):
    """Paper eq. 2 in float64 (< 1e-10; the paper reports ~1e-14) with the Jacobian from autograd;
    the conventional Jacobian (nothing frozen) must fail the same check."""
    name, model = family
    net = read_net(model, torch.float64)
    x = net.embed(IDS)
    jac = DetachedJacobian(net, x)
    dense = autograd_jacobian(net, x)
    assert reconstruction_error(dense, x, jac.y, jac.bias_term) < 1e-10
    assert jac.rel_error() < 1e-10  # the one-product check agrees
    ordinary = autograd_jacobian(net, x, mode="ordinary")
    assert reconstruction_error(ordinary, x, jac.y, jac.bias_term) > 1e-2
    # float32: the same check at float32 precision
    net32 = read_net(model, torch.float32)
    j32 = DetachedJacobian(net32, net32.embed(IDS))
    assert j32.rel_error() < 1e-4
    assert reconstruction_error(autograd_jacobian(net32, j32.x), j32.x, j32.y, j32.bias_term) < 1e-4


def test_biases_enter_as_one_constant_term(tiny_models):
    """GPT-2's biases break homogeneity (the paper's negative control); the constant c = F(0) of
    the frozen affine map restores exactness: y = Σ J_i x_i + c."""
    net = read_net(tiny_models["gpt2"], torch.float64)
    x = net.embed(IDS)
    jac = DetachedJacobian(net, x)
    dense = autograd_jacobian(net, x)
    assert net.has_bias and float(jac.bias_term.norm()) > 1e-3
    assert reconstruction_error(dense, x, jac.y) > 1e-3
    assert reconstruction_error(dense, x, jac.y, jac.bias_term) < 1e-10


def test_bias_on_a_llama_v_projection_is_detected():
    from interp.models.tiny import build_tiny_model

    model = build_tiny_model("llama", seed=1, n_layers=1)
    with torch.no_grad():
        model.model.layers[0].self_attn.v_proj.bias = torch.nn.Parameter(torch.randn(32) * 0.5)
    net = read_net(model, torch.float64)
    jac = DetachedJacobian(net, net.embed(IDS))
    assert net.has_bias
    assert float((jac.matvec(jac.x[None])[0] - jac.y).norm() / jac.y.norm()) > 1e-3
    assert jac.rel_error() < 1e-10


@pytest.mark.parametrize("site", SITES)
def test_products_match_autograd(family, site):
    """The replayed map and the hand-written adjoint against autograd's JVP / VJP of the
    detached forward, at the final output and at attention / MLP / residual sites."""
    _, model = family
    net = read_net(model, torch.float64)
    x = net.embed(IDS)
    jac = DetachedJacobian(net, x, site=site, position=7)
    ref = autograd_jacobian(net, jac.x, site=site)  # [d, 8, d]
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(3, *jac.x.shape, generator=gen, dtype=torch.float64)
    u = torch.randn(3, jac.y.shape[0], generator=gen, dtype=torch.float64)
    assert torch.allclose(jac.matvec(v), torch.einsum("opi,bpi->bo", ref, v), atol=1e-10)
    assert torch.allclose(jac.rmatvec(u), torch.einsum("opi,bo->bpi", ref, u), atol=1e-10)
    assert torch.allclose(jac.dense(chunk=20), ref, atol=1e-10)
    assert jac.rel_error() < 1e-10  # every site is an exact linear function of the inputs


def test_contributions_sum_to_output(tiny_llama):
    net = read_net(tiny_llama, torch.float64)
    jac = DetachedJacobian(net, net.embed(IDS))
    assert torch.allclose(jac.contributions().sum(0), jac.y, atol=1e-10)


@pytest.mark.parametrize("method", ["randomized", "krylov"])
def test_svd_from_products_matches_dense(tiny_llama, method):
    net = read_net(tiny_llama, torch.float64)
    jac = DetachedJacobian(net, net.embed(IDS))
    ref = dense_svd(jac.dense())
    if method == "randomized":
        t = randomized_svd(jac.matvec, jac.rmatvec, (jac.n_pos, 64), k=8, oversample=16,
                           n_iter=6)
    else:  # a 40-dimensional Krylov space of the 64-dimensional output space
        t = block_krylov_svd(jac.matvec, jac.rmatvec, (jac.n_pos, 64), k=8, block=4, n_iter=9)
    assert torch.allclose(t.S, ref.S[:8], rtol=1e-5)
    # U, V are singular pairs: Uᵀ J = S Vᵀ
    rows = jac.rmatvec(t.U.T).reshape(8, -1)
    assert torch.allclose(rows, t.S[:, None] * t.V.reshape(8, -1), atol=1e-8)
    assert abs(t.stable_rank - ref.stable_rank) / ref.stable_rank < 0.15


def test_krylov_projections_interlace_and_stop_on_either_side(tiny_llama):
    """Golub-Kahan: σᵢ(Q_jᵀ J) ≤ σᵢ(J P_j) ≤ σᵢ(Q_{j+1}ᵀ J) ≤ σᵢ(J), so the right projection
    after each forward block is a better estimate at no product's cost. A stop there returns
    right Ritz triplets (J v = σ u); one after the adjoint products left ones (Jᵀ u = σ v)."""
    net = read_net(tiny_llama, torch.float64)
    jac = DetachedJacobian(net, net.embed(IDS))
    ref = dense_svd(jac.dense()).S[:8]
    t = block_krylov_svd(jac.matvec, jac.rmatvec, (jac.n_pos, 64), k=8, block=2, n_iter=12,
                         tol=0.0)
    assert [side for _, side, _ in t.history[:4]] == ["left", "right", "left", "right"]
    vals = torch.tensor([h[2] for h in t.history if len(h[2]) == 8], dtype=torch.float64)
    assert len(vals) > 10 and (vals.diff(dim=0) >= -1e-9 * ref).all()
    assert (vals <= ref * (1 + 1e-9)).all() and float(((vals[-1] - ref) / ref).abs().max()) < 1e-4
    sides, calls = {}, []
    for tol in (1e-5, 1e-6):  # these stop after the forward and after the adjoint products
        jac = DetachedJacobian(net, net.embed(IDS))
        forward = jac.matvec
        jac.matvec = lambda v, sites=None, f=forward: calls.append(len(v)) or f(v, sites)
        t = jac.svd(k=8, block=2, tol=tol)
        side = sides[tol] = t.history[-1][1]
        n_calls = len(calls)
        assert jac.rel_error() < 1e-10 and len(calls) == n_calls  # J x* came in the first batch
        assert float(((t.S - ref) / ref).abs().max()) < 10 * tol
        if side == "right":
            assert torch.allclose(jac.matvec(t.V), t.S[:, None] * t.U.T, atol=1e-8)
        else:
            rows = jac.rmatvec(t.U.T).reshape(8, -1)
            assert torch.allclose(rows, t.S[:, None] * t.V.reshape(8, -1), atol=1e-8)
    assert sides == {1e-5: "right", 1e-6: "left"}


def test_linearise_cli_writes_a_run(tiny_llama_dir, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app
    from interp.linearise import plots
    from interp.linearise.runs import load_linearisation
    from interp.workspace import load_run

    out = tmp_path / "lin"
    res = CliRunner().invoke(app, ["linearise", "--prompt", "Hello, world", "--model",
                                   str(tiny_llama_dir), "--out", str(out), "--k", "6",
                                   "--dtype", "float64", "--full", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["rel_error"] < 1e-10
    run = load_run(out)
    assert run.kind == "linearise" and run.status == "done"
    result = load_linearisation(out, tensors=True)
    s = result.summary
    assert len(s["sigma"]) == 6 and s["sigma"] == sorted(s["sigma"], reverse=True)
    assert {r["component"] for r in s["layers"]} == {"resid_post", "attn_out", "mlp_out"}
    assert len(s["per_token"]) == len(s["tokens"])
    assert result.tensors["jacobian"].shape == (64, len(s["tokens"]), 64)
    for name, fig in plots.FIGURES.items():  # a dense SVD has no Krylov steps to show
        assert len(fig(s).data) >= (name != "convergence")
    bad = CliRunner().invoke(app, ["linearise", "--prompt", "Hi", "--model", str(tiny_llama_dir),
                                   "--out", str(tmp_path / "bad"), "--position", "9"])
    assert bad.exit_code == 2 and "outside the prompt" in bad.output


def test_unknown_family_is_refused():
    from transformers import AutoModelForCausalLM, BloomConfig

    from interp.errors import InterpError

    model = AutoModelForCausalLM.from_config(BloomConfig(vocab_size=50, hidden_size=32, n_layer=1,
                                                         n_head=2))
    with pytest.raises(InterpError, match="Supported"):
        read_net(model)


# ------------------------------------------------------------------ the default model (slow)
PROMPT = "The Golden Gate Bridge is in the city of San"


@pytest.mark.slow
def test_default_model_exact_in_float64(default_model, all_cores):
    """float64: one product reconstructs y to < 1e-10; autograd VJPs of the detached forward give
    the same projections uᵀy = Σ_i (J_iᵀu)·x_i, and those of the ordinary forward do not."""
    net = read_net(default_model, torch.float64)
    ids = default_model.to_tokens(PROMPT)[0][0]
    x = net.embed(ids)
    jac = DetachedJacobian(net, x)
    assert jac.rel_error() < 1e-10
    u = torch.randn(4, net.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def projections(mode):
        xs = x.clone().requires_grad_(True)
        y = run(net, xs, Frozen(mode))[FINAL][-1]
        rows = [torch.autograd.grad(y @ ui, xs, retain_graph=True)[0] for ui in u]
        return torch.stack([(r * x).sum() for r in rows])

    target = u @ jac.y
    assert torch.allclose(projections("detach"), target, rtol=1e-10, atol=1e-10 * float(jac.y.norm()))
    assert not torch.allclose(projections("ordinary"), target, rtol=1e-2)
    assert torch.allclose(jac.rmatvec(u), torch.stack([r for r in _vjps(net, x, u)]), atol=1e-9)


def _vjps(net, x, u):
    xs = x.clone().requires_grad_(True)
    y = run(net, xs, Frozen("detach"))[FINAL][-1]
    return [torch.autograd.grad(y @ ui, xs, retain_graph=True)[0] for ui in u]


@pytest.mark.slow
def test_default_model_float32_and_decodings(default_model, all_cores):
    """float32 exactness against the model's own output (< 1e-4), low stable rank, and the
    paper's qualitative result: the top singular vector decodes to the predicted token."""
    cfg = LineariseConfig(prompt=PROMPT, k=8, per_layer=False, dtype="float32", n_iter=3)
    r = linearise(default_model, cfg)
    m = r.summary["metrics"]
    _, cache = default_model.run_with_cache(PROMPT, hooks=["ln_final.hook_normalized"])
    ref = cache["ln_final.hook_normalized"][0, -1]
    assert float((r.tensors["y"] - ref).norm() / ref.norm()) < 1e-5
    assert m["rel_error"] < 1e-4
    assert m["stable_rank"] < 20  # far below d_model = 576
    assert r.summary["prediction"][0]["token"].strip() == "Francisco"
    assert m["pred_in_top_u1"]
