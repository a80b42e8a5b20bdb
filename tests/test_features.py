"""Feature statistics: token-detector latents on a tiny model (top contexts known), the
streaming pass against a brute-force reference, store vs model sources, the query API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.data import CorpusSpec
from saes.architectures import create_sae
from saes.base import SAEConfig
from saes.features import (FeatureIndex, FeatureStatsConfig, feature_stats, features_run,
                           model_batches, store_batches)
from saes.formats import save_saelens

HOOK = "blocks.0.hook_resid_pre"  # the token embedding: a latent can detect one token
CHARS = ["e", "t", "(", ":"]
N_TOK = 2048
CFG = FeatureStatsConfig(n_tokens=N_TOK, batch_windows=4, top_n=8, context_left=5,
                         context_right=2)


@pytest.fixture(scope="module")
def detector(tiny_llama, tiny_llama_dir, tmp_path_factory):
    """A JumpReLU SAE whose latents 0..3 fire (value 1) exactly on one character each; latents 4
    and 5 are random ReLU-like directions with graded activations."""
    E = tiny_llama.hf_model.get_input_embeddings().weight.detach()
    ids = [tiny_llama.tokenizer.convert_tokens_to_ids(c) for c in CHARS]
    sae = create_sae(SAEConfig(architecture="jumprelu", d_in=64, d_sae=6, hook_name=HOOK,
                               model_name=str(tiny_llama_dir)))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.enc_weight.copy_(torch.randn(6, 64, generator=g) / 8)
        for j, i in enumerate(ids):
            sae.enc_weight[j] = E[i] / E[i].norm() ** 2
        sae.W_dec.copy_(sae.enc_weight / sae.enc_weight.norm(dim=1, keepdim=True))
        sae.log_threshold.fill_(float(np.log(0.999)))
        sae.log_threshold[4:] = -30.0
    pre = sae.pre_acts(E)[:, :4]
    hits = (pre > 0.999).nonzero()
    assert torch.equal(hits[:, 0][hits[:, 1].argsort()], torch.tensor(ids))  # one token each
    path = tmp_path_factory.mktemp("detector")
    save_saelens(sae, path)
    return sae, ids, path


@pytest.fixture(scope="module")
def windows(tiny_llama):
    from interp.data import token_windows

    return token_windows(CorpusSpec(), tiny_llama.tokenizer, 128, N_TOK)


@pytest.fixture(scope="module")
def run(detector, tiny_llama, tmp_path_factory):
    return features_run(detector[2], N_TOK, out=tmp_path_factory.mktemp("feat") / "run",
                        cfg=CFG, model=tiny_llama, progress=False)


def test_token_detectors_have_the_known_density_and_contexts(run, detector, windows):
    _, ids, _ = detector
    idx = FeatureIndex(run.path)
    body = windows[:, 1:]  # position 0 (BOS) is not counted
    assert idx.meta["n_tokens"] == body.numel()
    for j, tid in enumerate(ids):
        page = idx.page(j)
        n = int((body == tid).sum())
        assert page.count == n and page.density == pytest.approx(n / body.numel())
        assert page.max_act == pytest.approx(1.0, abs=1e-4)
        assert len(page.contexts) == min(8, n)
        for c in page.contexts:
            assert c.token_ids[c.center] == tid and c.tokens[c.center] == CHARS[j]
            # the per-token activations mark exactly the occurrences of the token in the window
            assert [a > 0.5 for a in c.acts] == [t == tid for t in c.token_ids]
            w = windows[c.window]
            assert w[c.position] == tid
            lo = c.position - c.center
            assert c.token_ids == w[lo:lo + len(c.token_ids)].tolist()
        assert idx.search(CHARS[j])[0]["latent"] == j


def test_streaming_pass_matches_brute_force(detector, tiny_llama):
    sae = detector[0]
    stats = feature_stats(sae, model_batches(tiny_llama, HOOK, CFG), CFG, progress=False)
    xs, valid = [], []
    for _, x, v, _ in model_batches(tiny_llama, HOOK, CFG):
        xs.append(x.reshape(-1, 64))
        v = v.clone()
        v[:, 0] = False
        valid.append(v.reshape(-1))
    with torch.no_grad():
        a = sae.encode(torch.cat(xs))[torch.cat(valid)]
    assert stats["n_tokens"] == a.shape[0]
    assert np.array_equal(stats["count"], (a > 0).sum(0).numpy())
    assert np.allclose(stats["max_act"], a.max(0).values.numpy())
    assert np.allclose(stats["mean_act_all"], a.double().mean(0).numpy(), rtol=1e-5)
    top = a.topk(CFG.top_n, dim=0).values.T.numpy()  # graded latents 4, 5: exact order
    assert np.allclose(stats["top_vals"][4:], top[4:])
    for j in (4, 5):  # quantiles from the histogram, within one log bin (12%)
        pos = a[:, j][a[:, j] > 0].double().numpy()
        for q in (0.5, 0.9):
            assert stats[f"q{int(q * 100)}"][j] == pytest.approx(np.quantile(pos, q), rel=0.13)


def test_memory_does_not_grow_with_tokens(detector, tiny_llama):
    from saes.features.stats import FeatureAccumulator

    acc = FeatureAccumulator(6, CFG)
    before = {k: v.numel() for k, v in vars(acc).items() if isinstance(v, torch.Tensor)}
    for tokens, x, v, first in model_batches(tiny_llama, HOOK, CFG):
        with torch.no_grad():
            acc.update(tokens, detector[0].encode(x.reshape(-1, 64)).reshape(*x.shape[:2], 6),
                       v, first)
    after = {k: v.numel() for k, v in vars(acc).items() if isinstance(v, torch.Tensor)}
    assert before == after and acc.n_tokens > 0


def test_store_source_gives_the_model_source_results(detector, tiny_llama, tiny_llama_dir,
                                                     tmp_path):
    from interp.caching import cache_activations
    from interp.store import StoreConfig

    store = cache_activations(tmp_path / "store", StoreConfig(
        model=str(tiny_llama_dir), hooks=(HOOK,), n_tokens=N_TOK, context_size=128,
        batch_size=4, shard_windows=8, outlier_ratio=None), model=tiny_llama, progress=False)
    a = feature_stats(detector[0], store_batches(store, HOOK, CFG), CFG, progress=False)
    b = feature_stats(detector[0], model_batches(tiny_llama, HOOK, CFG), CFG, progress=False)
    assert np.array_equal(a["count"], b["count"]) and np.allclose(a["top_vals"], b["top_vals"])
    assert np.array_equal(a["ctx_tokens"], b["ctx_tokens"])


def test_tables_logits_and_figures(run, detector, tiny_llama):
    from saes.features.plots import (contexts_html, fig_density_all, fig_feature_page,
                                     fig_logit_effects)
    from saes.features.stats import logit_effects, unembedding

    idx = FeatureIndex(run.path)
    assert run.status == "done" and idx.n_latents == 6
    page = idx.page(0)
    W_U, gain, _ = unembedding(tiny_llama)
    eff = (detector[0].W_dec[0].detach() * gain) @ W_U.T
    assert page.top_logits[0][0] == tiny_llama.tokenizer.decode([int(eff.argmax())])
    assert page.top_logits[0][1] == pytest.approx(float(eff.max()), rel=1e-4)
    ti, tv, bi, bv = logit_effects(detector[0].W_dec.detach(), W_U, gain, k=3)
    assert torch.equal(ti[0], eff.topk(3).indices) and (bv[:, 0] <= bv[:, -1]).all()
    rows = idx.latents(order_by="density", limit=2)
    assert rows[0]["density"] >= rows[1]["density"]
    assert len(idx.log10_densities()) == 6
    assert len(fig_feature_page(page).data) >= 2 and fig_density_all(idx.log10_densities())
    assert fig_logit_effects(page.to_dict()).data
    assert "<u" not in contexts_html(page) and "&lt;" not in CHARS[0]
    with pytest.raises(Exception, match="out of range"):
        idx.page(6)


def test_cli_writes_a_features_run_and_rejects_a_bad_path(detector, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    out = tmp_path / "cli-run"
    res = CliRunner().invoke(app, ["features", str(detector[2]), "--tokens", "512", "--out",
                                   str(out), "--batch-windows", "4", "--top-n", "4"])
    assert res.exit_code == 0, res.output
    c = FeatureIndex(out).page(1).contexts[0]
    assert c.tokens[c.center] == CHARS[1] and len(c.tokens) <= 15 + 1 + 4
    res = CliRunner().invoke(app, ["features", str(tmp_path / "nope"), "--tokens", "512"])
    assert res.exit_code == 2 and "cfg.json missing" in res.output
