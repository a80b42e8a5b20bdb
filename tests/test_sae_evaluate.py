"""SAE evaluation on the tiny Llama: hand-built dictionaries whose metrics are known in advance
(exact, zero, shrunk by half, dead/dense latents), naive references for the batched sums and the
spliced CE/KL, head-dimension and transcoder splicing, the report file and the figures."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from interp.data import CorpusSpec, token_windows
from interp.errors import ConfigError
from interp.caching import cache_activations
from interp.store import StoreConfig
from saes.architectures import architecture_class, create_sae
from saes.base import SAEConfig, SparseDictionary
from saes.evaluate import (DENSE_THRESHOLD, LOG10_DENSITY_FLOOR, density_histogram, evaluate_sae,
                           read_report, reconstruction_metrics, spliced_lm_metrics, write_report)

D = 64
RESID = "blocks.0.hook_resid_post"
HOOK_Z = "blocks.1.attn.hook_z"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and far faster than on 2 busy shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def relu_dict(hook: str = RESID, d_sae: int = 2 * D) -> SparseDictionary:
    """A standard (ReLU) dictionary with every weight and bias zero, to be filled by hand."""
    cfg = SAEConfig(architecture="standard", d_in=D, d_sae=d_sae, hook_name=hook)
    return architecture_class("standard")(cfg)


@torch.no_grad()
def identity_dict(hook: str = RESID, scale: float = 1.0, extra: int = 0) -> SparseDictionary:
    """Latents ±e_i: relu(x_i) and relu(-x_i) decode back to x exactly (times `scale`)."""
    sae = relu_dict(hook, d_sae=2 * D + extra)
    eye = torch.eye(D)
    sae.enc_weight[: 2 * D] = torch.cat([eye, -eye])
    sae.W_dec[: 2 * D] = scale * torch.cat([eye, -eye])
    return sae


@pytest.fixture(scope="module")
def windows(tiny_llama):
    return token_windows(CorpusSpec(source="python-docs"), tiny_llama.tokenizer, 32, 32 * 8)


@pytest.fixture(scope="module")
def rows(tiny_llama, windows):
    _, cache = tiny_llama.run_with_cache(windows, hooks=[RESID])
    return cache[RESID][:, 1:].reshape(-1, D)


def naive_reconstruction(sae, x, y=None):
    y = (x if y is None else y).double()
    with torch.no_grad():
        acts = sae.encode(x)
        yhat = sae.decode(acts, x).double()
    density = (acts != 0).double().mean(0)
    return {
        "fvu": float((y - yhat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()),
        "mse": float((y - yhat).pow(2).mean()),
        "l0": float((acts != 0).double().sum(-1).mean()),
        "l1": float(acts.abs().double().sum(-1).mean()),
        "cossim": float(F.cosine_similarity(yhat, y, dim=-1).mean()),
        "l2_ratio": float((yhat.norm(dim=-1) / y.norm(dim=-1)).mean()),
        "relative_reconstruction_bias": float(yhat.pow(2).sum() / (yhat * y).sum()),
        "dead_frac": float((density == 0).double().mean()),
        "dense_frac": float((density > DENSE_THRESHOLD).double().mean()),
    }, density


def naive_lm(model, sae, ids, skip_bos=True):
    """CE/KL by hand: one hook that rewrites every position but the first (if skip_bos)."""
    first = int(skip_bos)

    def run(fn):
        def hook(act, _):
            new = act.clone()
            new[:, first:] = fn(act[:, first:])
            return new
        with torch.no_grad(), model.hooks([(sae.cfg.hook_name, hook)]):
            return model.forward(ids)

    with torch.no_grad():
        clean = model.forward(ids)
    spliced = run(lambda a: sae(a.flatten(2)).reshape(a.shape))
    zero = run(torch.zeros_like)

    def ce(logits):
        return float(F.cross_entropy(logits[:, first:-1].flatten(0, 1),
                                     ids[:, first + 1:].flatten()))

    def kl(logits):  # KL(clean || logits), summed over the vocabulary, mean over positions
        return float(F.kl_div(logits[:, first:].log_softmax(-1), clean[:, first:].log_softmax(-1),
                              log_target=True, reduction="none").sum(-1).mean())

    return {"ce_clean": ce(clean), "ce_spliced": ce(spliced), "ce_zero": ce(zero),
            "kl_spliced": kl(spliced), "kl_zero": kl(zero)}


# --------------------------------------------------------------------------- reconstruction
def test_identity_dictionary_reconstructs_exactly_and_leaves_the_model_unchanged(
        tiny_llama, windows, rows):
    sae = identity_dict()
    r = reconstruction_metrics(sae, rows, batch_size=50)
    assert r["fvu"] < 1e-10 and r["explained_variance"] == pytest.approx(1.0, abs=1e-10)
    assert r["mse"] < 1e-12 and r["cossim"] == pytest.approx(1.0, abs=1e-6)
    assert r["l2_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert r["relative_reconstruction_bias"] == pytest.approx(1.0, abs=1e-6)
    assert r["l0"] == pytest.approx(D)  # exactly one of ±e_i per nonzero coordinate
    assert r["n_rows"] == rows.shape[0] and r["density"].shape == (2 * D,)

    lm = spliced_lm_metrics(tiny_llama, sae, windows, batch_size=3)
    assert lm["ce_spliced"] == pytest.approx(lm["ce_clean"], abs=1e-5)
    assert lm["kl_spliced"] < 1e-6 < lm["kl_zero"]
    assert lm["ce_zero"] > lm["ce_clean"]
    assert lm["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert lm["kl_score"] == pytest.approx(1.0, abs=1e-4)
    assert lm["n_windows"] == windows.shape[0] and lm["n_predictions"] == windows.shape[0] * 30


def test_zero_dictionary_is_zero_ablation(tiny_llama, windows, rows):
    sae = relu_dict()  # all weights and biases zero: ŷ = 0
    r = reconstruction_metrics(sae, rows)
    y = rows.double()
    assert r["fvu"] == pytest.approx(float(y.pow(2).sum() / (y - y.mean(0)).pow(2).sum()), rel=1e-9)
    assert r["l0"] == 0 and r["dead_frac"] == 1.0 and r["dense_frac"] == 0.0
    assert r["l2_ratio"] == 0 and r["relative_reconstruction_bias"] is None  # <ŷ, y> = 0

    lm = spliced_lm_metrics(tiny_llama, sae, windows)
    assert lm["ce_spliced"] == pytest.approx(lm["ce_zero"], abs=1e-6)
    assert lm["kl_spliced"] == pytest.approx(lm["kl_zero"], rel=1e-6)
    assert lm["ce_loss_score"] == pytest.approx(0.0, abs=1e-5)
    assert lm["kl_score"] == pytest.approx(0.0, abs=1e-5)


def test_random_topk_matches_naive_reference_and_is_imperfect(tiny_llama, windows, rows):
    sae = create_sae(SAEConfig(architecture="topk", d_in=D, d_sae=96, k=6, hook_name=RESID), seed=1)
    with torch.no_grad():
        sae.b_dec.copy_(rows.mean(0))
    r = reconstruction_metrics(sae, rows, batch_size=37)  # batches that do not divide the rows
    ref, density = naive_reconstruction(sae, rows)
    for k, v in ref.items():
        assert r[k] == pytest.approx(v, rel=1e-5, abs=1e-9), k
    torch.testing.assert_close(r["density"], density)
    assert 0 < r["fvu"] and r["l0"] <= 6

    for skip_bos in (True, False):
        lm = spliced_lm_metrics(tiny_llama, sae, windows, batch_size=5, skip_bos=skip_bos)
        ref = naive_lm(tiny_llama, sae, windows, skip_bos=skip_bos)
        for k, v in ref.items():
            assert lm[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (k, skip_bos)
        assert lm["ce_loss_score"] < 1 and lm["kl_score"] < 1


def test_half_scaled_decoder_shrinks_by_half(rows):
    r = reconstruction_metrics(identity_dict(scale=0.5), rows)
    assert r["l2_ratio"] == pytest.approx(0.5, abs=1e-6)
    assert r["relative_reconstruction_bias"] == pytest.approx(0.5, abs=1e-6)
    assert r["cossim"] == pytest.approx(1.0, abs=1e-6)
    y = rows.double()
    assert r["fvu"] == pytest.approx(float(0.25 * y.pow(2).sum() / (y - y.mean(0)).pow(2).sum()),
                                     rel=1e-6)


@torch.no_grad()
def test_dead_and_dense_latents_are_counted(rows):
    sae = identity_dict(extra=3)  # extra latents decode to zero: reconstruction stays exact
    n = 2 * D
    sae.b_enc[n] = -1.0  # zero encoder row, negative bias: never fires
    sae.b_enc[n + 1] = 1.0  # always fires: dense
    sae.enc_weight[n + 2, 0] = 1.0  # fires on the top 5% of coordinate 0: alive but not dense
    sae.b_enc[n + 2] = -float(rows[:, 0].quantile(0.95))
    r = reconstruction_metrics(sae, rows)
    ref, density = naive_reconstruction(sae, rows)
    assert density[n] == 0 and density[n + 1] == 1 and 0 < density[n + 2] <= DENSE_THRESHOLD
    assert r["dead_frac"] == pytest.approx(1 / (n + 3))
    assert r["dense_frac"] == pytest.approx(ref["dense_frac"])
    assert r["fvu"] < 1e-10
    h = density_histogram(r["density"])
    assert sum(h["counts"]) == n + 3 and len(h["edges"]) == len(h["counts"]) + 1
    assert h["log10_density"][n] == LOG10_DENSITY_FLOOR and h["log10_density"][n + 1] == 0.0


def test_wrong_width_is_a_clear_error(tiny_llama, windows, rows):
    sae = create_sae(SAEConfig(architecture="topk", d_in=32, d_sae=64, k=4, hook_name=RESID))
    with pytest.raises(ConfigError, match="32"):
        reconstruction_metrics(sae, rows)
    with pytest.raises(ConfigError, match="d_in"):
        spliced_lm_metrics(tiny_llama, sae, windows[:2])


# --------------------------------------------------------------------------- splicing
def test_head_dimension_hooks_are_flattened(tiny_llama, windows):
    exact = spliced_lm_metrics(tiny_llama, identity_dict(HOOK_Z), windows)  # [b, p, 4, 16]
    assert exact["ce_spliced"] == pytest.approx(exact["ce_clean"], abs=1e-5)
    assert exact["ce_zero"] != pytest.approx(exact["ce_clean"], abs=1e-3)
    zero = spliced_lm_metrics(tiny_llama, relu_dict(HOOK_Z), windows)
    assert zero["ce_spliced"] == pytest.approx(zero["ce_zero"], abs=1e-6)


class _MLPTranscoder(SparseDictionary):
    """A "transcoder" computing a real block's MLP of its input: exact when it is block 0's."""

    def __init__(self, cfg, fn):
        super().__init__(cfg)
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def transcoder(hook_in: str, fn) -> SparseDictionary:
    cfg = SAEConfig(architecture="standard", d_in=D, d_sae=8, transcoder=True, hook_name=hook_in,
                    hook_name_out="blocks.0.hook_mlp_out")
    return _MLPTranscoder(cfg, fn)


def test_transcoder_splice_reads_the_input_hook_and_replaces_the_output(tiny_llama, windows):
    import copy

    layers = copy.deepcopy(tiny_llama.hf_model.model.layers)  # copies carry none of the hooks
    exact = spliced_lm_metrics(tiny_llama, transcoder("blocks.0.ln2.hook_normalized",
                                                      layers[0].mlp), windows)
    assert exact["ce_spliced"] == pytest.approx(exact["ce_clean"], abs=1e-5)
    assert exact["kl_spliced"] < 1e-6 and exact["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    # a read-only input hook works too: resid_mid -> norm -> MLP is block 0's MLP output
    mid = spliced_lm_metrics(tiny_llama, transcoder(
        "blocks.0.hook_resid_mid", lambda x: layers[0].mlp(layers[0].post_attention_layernorm(x))),
        windows)
    assert mid["ce_spliced"] == pytest.approx(mid["ce_clean"], abs=1e-5)
    wrong = spliced_lm_metrics(tiny_llama, transcoder("blocks.0.ln2.hook_normalized",
                                                      layers[1].mlp), windows)
    assert wrong["ce_spliced"] != pytest.approx(wrong["ce_clean"], abs=1e-3)
    assert wrong["ce_zero"] == pytest.approx(exact["ce_zero"])  # ablation zeroes the output hook
    bad = transcoder("blocks.0.hook_mlp_out", layers[0].mlp)
    bad.cfg = SAEConfig(**{**bad.cfg.to_dict(), "hook_name_out": "blocks.0.hook_resid_pre"})
    with pytest.raises(ConfigError, match="before"):
        spliced_lm_metrics(tiny_llama, bad, windows[:1])


# --------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def store(tiny_llama, tiny_llama_dir, tmp_path_factory):
    cfg = StoreConfig(model=str(tiny_llama_dir), hooks=(RESID,), n_tokens=32 * 16, context_size=32,
                      batch_size=4, shard_windows=8, corpus=CorpusSpec(source="python-docs"),
                      outlier_ratio=None)
    out = tmp_path_factory.mktemp("store")
    return cache_activations(out, cfg, model=tiny_llama, progress=False)


def test_evaluate_sae_from_a_store_writes_a_json_report(tiny_llama, store, tmp_path):
    sae = identity_dict(extra=1)
    report = evaluate_sae(sae, store=store, model=tiny_llama, holdout_every=4, n_windows=3)
    held = store.activations(RESID, split="eval", holdout_every=4)
    assert report["data"]["n_rows"] == held.shape[0] == 4 * 31  # windows 0, 4, 8, 12 minus BOS
    assert report["data"]["source"] == "store" and report["data"]["n_windows"] == 3
    assert report["reconstruction"]["fvu"] < 1e-10
    assert report["reconstruction"]["dead_frac"] == pytest.approx(1 / (2 * D + 1))
    assert report["lm"]["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert len(report["density"]["log10_density"]) == 2 * D + 1
    held_windows = store.tokens()[[0, 4, 8]].long()  # the LM half ran on these
    assert report["lm"]["ce_clean"] == pytest.approx(
        spliced_lm_metrics(tiny_llama, sae, held_windows)["ce_clean"], rel=1e-6)

    path = write_report(report, tmp_path / "eval.json")
    assert read_report(path) == json.loads(json.dumps(report))
    assert not list(tmp_path.glob(".*.tmp"))

    capped = evaluate_sae(sae, store=store, holdout_every=4, n_eval_rows=50)
    assert capped["data"]["n_rows"] == 50 and capped["lm"] is None


def test_evaluate_sae_from_a_model_and_windows(tiny_llama, windows, rows):
    sae = create_sae(SAEConfig(architecture="topk", d_in=D, d_sae=96, k=6, hook_name=RESID), seed=2)
    report = evaluate_sae(sae, model=tiny_llama, windows=windows)
    assert report["data"]["source"] == "model" and report["data"]["n_rows"] == rows.shape[0]
    assert report["reconstruction"]["fvu"] == pytest.approx(
        reconstruction_metrics(sae, rows)["fvu"], rel=1e-6)
    with pytest.raises(ConfigError, match="store"):
        evaluate_sae(sae, model=tiny_llama)


# --------------------------------------------------------------------------- figures
def test_figures(tiny_llama, windows):
    import plotly.graph_objects as go

    from saes.plots import (fig_activation_histogram, fig_density_histogram, fig_eval_summary,
                            fig_training_curves)

    records = [{"step": s, "tokens": 64 * s, "loss": 1 / s, "fvu": 0.5 / s, "l0": 10 + s,
                "dead_frac": 0.01 * s} for s in range(1, 6)]
    fig = fig_training_curves(records)
    assert isinstance(fig, go.Figure) and len(fig.data) == 4
    assert [a.text for a in fig.layout.annotations] == ["Loss", "FVU", "L0", "Dead fraction"]
    assert list(fig.data[2].y) == [11, 12, 13, 14, 15]
    assert list(fig.data[0].x) == [64, 128, 192, 256, 320]

    report = evaluate_sae(identity_dict(extra=2), model=tiny_llama, windows=windows[:2])
    fig = fig_density_histogram(report["density"]["log10_density"])
    assert len(fig.data) == 1 and len(fig.data[0].x) == 2 * D + 2
    n_dead = round(report["reconstruction"]["dead_frac"] * (2 * D + 2))
    assert n_dead >= 2 and f"{n_dead} never fired" in fig.layout.title.text

    fig = fig_eval_summary(report)
    assert [type(t).__name__ for t in fig.data] == ["Bar", "Table"]
    assert "CE loss score" in fig.data[0].x and "KL score" in fig.data[0].x
    assert list(fig.data[1].cells.values[0][:2]) == ["FVU", "L0"]
    assert fig.layout.title.text.startswith("Evaluation: standard at " + RESID)

    fig = fig_activation_histogram(torch.tensor([0.0, 0.0, 1.5, 2.0]), latent=7)
    assert len(fig.data) == 1 and list(fig.data[0].x) == [1.5, 2.0]
    assert "latent 7" in fig.layout.title.text and "2/4" in fig.layout.title.text
