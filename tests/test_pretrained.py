"""Pretrained dictionaries by name (saes.pretrained, circuits.pretrained).

Every layout is tested on files written here, in the layout its release uses on the Hub, put
into a Hugging Face cache directory (plain files in `models--org--name/snapshots/<commit>/`) or
a local directory; nothing is downloaded (conftest sets HF_HUB_OFFLINE=1). Releases are the
real names of SAELens's registry; the widths are the real models' d_model with a handful of
latents. Each loaded dictionary is compared with the layout's own formula computed here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from interp.errors import ConfigError, ModelMismatch, PretrainedNotFound
from saes.pretrained.load import fetch_pretrained, load_pretrained
from saes.pretrained.registry import entry, get_release, list_pretrained, releases

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ============================================================== writing files
def _write(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in data.items()}, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in data.items()})
    elif path.suffix in (".pt", ".pth"):
        torch.save(data, path)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(json.dumps(data))


def hf_cache(cache, repo_id: str, files: dict) -> None:
    """Files as huggingface_hub's cache holds them after a download of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for rel, data in files.items():
        _write(repo / "snapshots" / COMMIT / rel, data)


def local(root, files: dict) -> None:
    for rel, data in files.items():
        _write(root / rel, data)


def rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def jump(pre, thr):
    return torch.relu(pre) * (pre > thr)


def jumprelu_params(d_in, d_sae, d_out=None, seed=0):
    """SAELens-named float32 tensors of a JumpReLU dictionary."""
    d_out = d_out or d_in
    return {"W_enc": rand(d_in, d_sae, seed=seed, scale=d_in ** -0.5),
            "W_dec": rand(d_sae, d_out, seed=seed + 1), "b_enc": rand(d_sae, seed=seed + 2,
                                                                    scale=0.1),
            "b_dec": rand(d_out, seed=seed + 3), "threshold": torch.full((d_sae,), 0.3)}


def close(a, b, tol=1e-4):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


# ============================================================== the registry
def test_registry_resolves_real_releases_offline():
    e = entry("gemma-scope-2b-pt-res-canonical", "layer_0/width_16k/canonical")
    assert (e.repo_id, e.path, e.model, e.layout) == (
        "google/gemma-scope-2b-pt-res", "layer_0/width_16k/average_l0_105", "gemma-2-2b",
        "gemma_2")
    e = entry("pythia-70m-deduped-res-sm", "blocks.0.hook_resid_pre")
    assert (e.repo_id, e.path, e.layout) == ("ctigges/pythia-70m-deduped__res-sm_processed",
                                             "e-res-sm", "sae_lens")
    assert entry("llama_scope_lxr_8x", "l0r_8x").norm_scaling_factor > 1
    gemma = {r.name for r in list_pretrained("google/gemma-2-2b")}
    assert {"gemma-scope-2b-pt-res", "gemma-scope-2b-pt-transcoders", "gemma"} <= gemma
    assert "pythia-70m-deduped-res-sm" in {r.name for r in list_pretrained("pythia-70m-deduped")}
    assert "gpt2-small-res-jb" in {r.name for r in list_pretrained("gpt2")}
    assert get_release("gemma-scope-2b-pt-transcoders").transcoders
    assert not get_release("gemma-scope-2b-pt-res").transcoders
    assert len(releases()) > 150


def test_misspelt_release_and_id_get_close_matches():
    with pytest.raises(ConfigError, match="Did you mean: gemma-scope-2b-pt-res"):
        entry("gemma-scope-2b-pt-rez", "layer_0/width_16k/canonical")
    with pytest.raises(ConfigError, match="layer_0/width_16k/canonical"):
        entry("gemma-scope-2b-pt-res-canonical", "layer_0/width_16k/canonicl")
    with pytest.raises(ConfigError, match="name one"):
        load_pretrained("gemma-scope-2b-pt-res-canonical")


# ============================================================== layouts
def write_pythia_sae(cache):
    """Pythia-70M's SAEs: a pre-6.0 SAELens cfg.json (hook_point), b_dec subtracted."""
    d, n = 512, 16
    p = jumprelu_params(d, n)
    del p["threshold"]
    cfg = {"d_in": d, "d_sae": n, "hook_point": "blocks.0.hook_resid_pre", "dtype": "float32",
           "model_name": "pythia-70m-deduped", "apply_b_dec_to_input": True}
    hf_cache(cache, "ctigges/pythia-70m-deduped__res-sm_processed", {
        "e-res-sm/cfg.json": cfg, "e-res-sm/sae_weights.safetensors": p,
        "e-res-sm/sparsity.safetensors": {"sparsity": torch.linspace(-6, -1, n)}})
    return "pythia-70m-deduped-res-sm", "blocks.0.hook_resid_pre", d, p


def test_saelens_layout_from_the_hf_cache(tmp_path):
    rel, sid, d, p = write_pythia_sae(tmp_path)
    got = fetch_pretrained(rel, sid, cache_dir=tmp_path)
    sae = got.dictionary
    assert sae.cfg.hook_name == "blocks.0.hook_resid_pre" and sae.cfg.architecture == "standard"
    assert torch.equal(got.sparsity, torch.linspace(-6, -1, 16))
    x = rand(7, d, seed=9)
    acts = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
    assert close(sae.encode(x), acts) and close(sae(x), acts @ p["W_dec"] + p["b_dec"])


@pytest.mark.parametrize("release,sae_id,hook,d_in", [
    ("gemma-scope-2b-pt-res-canonical", "layer_3/width_16k/canonical",
     "blocks.3.hook_resid_post", 2304),
    ("gemma-scope-2b-pt-mlp-canonical", "layer_3/width_16k/canonical",
     "blocks.3.hook_mlp_out", 2304),
    ("gemma-scope-2b-pt-att-canonical", "layer_3/width_16k/canonical", "blocks.3.attn.hook_z",
     2048),
])
def test_gemma_scope_npz_saes(tmp_path, release, sae_id, hook, d_in):
    e = entry(release, sae_id)
    p = jumprelu_params(d_in, 6)
    # Gemma Scope's own files use lower-case w_enc / w_dec keys in places; both are read
    hf_cache(tmp_path, e.repo_id, {f"{e.path}/params.npz": {
        "w_enc": p["W_enc"], "w_dec": p["W_dec"], "b_enc": p["b_enc"], "b_dec": p["b_dec"],
        "threshold": p["threshold"]}})
    sae = load_pretrained(release, sae_id, cache_dir=tmp_path)
    assert (sae.cfg.hook_name, sae.cfg.d_in, sae.cfg.model_name) == (hook, d_in, "gemma-2-2b")
    x = rand(5, d_in, seed=4)
    acts = jump(x @ p["W_enc"] + p["b_enc"], 0.3)  # no b_dec subtraction
    assert acts.count_nonzero() > 0
    assert close(sae.encode(x), acts) and close(sae(x), acts @ p["W_dec"] + p["b_dec"])


def test_gemma_scope_embedding_sae_is_rescaled_as_trained(tmp_path):
    e = entry("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6")
    p = jumprelu_params(2304, 4)
    hf_cache(tmp_path, e.repo_id, {f"{e.path}/params.npz": p})
    sae = load_pretrained("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6",
                          cache_dir=tmp_path)
    assert sae.cfg.hook_name == "hook_embed"
    assert close(sae.W_enc, p["W_enc"] / math.sqrt(2304))
    assert close(sae.W_dec, p["W_dec"] * math.sqrt(2304))


def test_gemma_scope_transcoder_npz(tmp_path):
    e = entry("gemma-scope-2b-pt-transcoders", "layer_0/width_16k/average_l0_76")
    p = jumprelu_params(2304, 5)
    hf_cache(tmp_path, e.repo_id, {f"{e.path}/params.npz": p})
    tc = load_pretrained("gemma-scope-2b-pt-transcoders", "layer_0/width_16k/average_l0_76",
                         cache_dir=tmp_path)
    assert tc.cfg.transcoder and (tc.cfg.hook_name, tc.cfg.hook_name_out) == (
        "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out")
    x = rand(5, 2304, seed=2)
    acts = jump(x @ p["W_enc"] + p["b_enc"], 0.3)
    assert close(tc(x), acts @ p["W_dec"] + p["b_dec"])


def test_gemma_scope_2_affine_transcoder_and_sae(tmp_path):
    d = 640  # Gemma 3 270M
    rel, tid = "gemma-scope-2-270m-pt-transcoders", "transcoder/layer_15_width_262k_l0_big_affine"
    e = entry(rel, tid)
    p = jumprelu_params(d, 4)
    skip = rand(d, d, seed=7, scale=0.01)  # stored [d_in, d_out]
    hf_cache(tmp_path, e.repo_id, {
        f"{e.path}/params.safetensors": {"w_enc": p["W_enc"], "w_dec": p["W_dec"],
                                         "b_enc": p["b_enc"], "b_dec": p["b_dec"],
                                         "threshold": p["threshold"],
                                         "affine_skip_connection": skip},
        f"{e.path}/config.json": {"architecture": "jump_relu", "affine_connection": True}})
    tc = load_pretrained(rel, tid, cache_dir=tmp_path)
    assert tc.cfg.skip and tc.cfg.hook_name == "blocks.15.ln2.hook_normalized"
    assert tc.cfg.hook_name_out == "blocks.15.hook_mlp_out"
    x = rand(3, d, seed=5)
    acts = jump(x @ p["W_enc"] + p["b_enc"], 0.3)
    assert close(tc(x), acts @ p["W_dec"] + p["b_dec"] + x @ skip)
    # an SAE of the same release family, without config.json (inferred from the folder)
    e2 = entry("gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_big")
    hf_cache(tmp_path, e2.repo_id, {f"{e2.path}/params.safetensors": {
        "w_enc": p["W_enc"], "w_dec": p["W_dec"], "b_enc": p["b_enc"], "b_dec": p["b_dec"],
        "threshold": p["threshold"]}})
    sae = load_pretrained("gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_big",
                          cache_dir=tmp_path)
    assert not sae.cfg.transcoder and sae.cfg.hook_name == "blocks.12.hook_resid_post"
    assert close(sae(x), acts @ p["W_dec"] + p["b_dec"])


def _llama_scope_reference(x, enc_w, enc_b, dec_w, dec_b, thr, s):
    """Llama Scope's computation on normalised inputs x * s, mapped back to raw units."""
    pre = (x * s) @ enc_w.T + enc_b
    return jump(pre, thr) @ dec_w.T / s + dec_b / s


def _encoder_decoder(d, n):
    return (rand(n, d, seed=1, scale=d ** -0.5), rand(n, seed=3, scale=0.1), rand(d, n, seed=2),
            rand(d, seed=4))


def write_llama_scope(cache):
    d, n = 4096, 4
    rel, sid = "llama_scope_lxr_8x", "l0r_8x"
    e = entry(rel, sid)
    enc_w, enc_b, dec_w, dec_b = _encoder_decoder(d, n)
    hp = {"d_model": d, "d_sae": n, "hook_point_in": "blocks.0.hook_resid_post",
          "hook_point_out": "blocks.0.hook_resid_post", "jump_relu_threshold": 0.02,
          "dataset_average_activation_norm": {"in": 2.5, "out": 2.5}}
    hf_cache(cache, e.repo_id, {
        f"{e.path}/hyperparams.json": hp,
        f"{e.path}/checkpoints/final.safetensors": {
            "encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w,
            "decoder.bias": dec_b}})
    return rel, sid, d


def test_llama_scope_folds_the_norm_scaling_factor(tmp_path):
    rel, sid, d = write_llama_scope(tmp_path)
    s = entry(rel, sid).norm_scaling_factor
    sae = load_pretrained(rel, sid, cache_dir=tmp_path)
    assert sae.cfg.hook_name == "blocks.0.hook_resid_post"
    thr = 0.02 * math.sqrt(d) / 2.5
    x = rand(6, d, seed=8, scale=1 / s)
    assert close(sae(x), _llama_scope_reference(x, *_encoder_decoder(d, 4), thr, s))


def write_llama_scope_r1(cache):
    d, n = 4096, 4
    rel, sid = "llama_scope_r1_distill", "l0r_800m_slimpajama"
    e = entry(rel, sid)
    enc_w, enc_b, dec_w, dec_b = _encoder_decoder(d, n)
    hf_cache(cache, e.repo_id, {
        f"{e.path}/config.json": {"d_model": d, "expansion_factor": 8,
                                  "hook_point_in": "blocks.0.hook_resid_post"},
        f"{e.path}/sae_weights.safetensors": {
            "encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w,
            "decoder.bias": dec_b, "log_jumprelu_threshold": torch.full((n,), math.log(0.2))}})
    return rel, sid, d


def test_llama_scope_r1_distill(tmp_path):
    rel, sid, d = write_llama_scope_r1(tmp_path)
    s = entry(rel, sid).norm_scaling_factor
    sae = load_pretrained(rel, sid, cache_dir=tmp_path)
    x = rand(6, d, seed=8, scale=1 / s)
    assert close(sae(x), _llama_scope_reference(x, *_encoder_decoder(d, 4), 0.2, s))


def write_dictionary_learning(cache):
    """SAEBench's Pythia TopK SAEs: config.json + ae.pt (read with weights_only=True)."""
    d, n, k = 512, 32, 4
    rel, sid = "sae_bench_pythia70m_sweep_topk_ctx128_0730", "blocks.3.hook_resid_post__trainer_0"
    e = entry(rel, sid)
    enc_w, enc_b, dec_w, b_dec = _encoder_decoder(d, n)
    state = {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w,
             "b_dec": b_dec, "k": torch.tensor(k)}
    trainer = {"dict_class": "AutoEncoderTopK", "activation_dim": d, "dict_size": n, "k": k,
               "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped"}
    hf_cache(cache, e.repo_id, {f"{e.path}/config.json": {"trainer": trainer,
                                                          "buffer": {"ctx_len": 128}},
                                f"{e.path}/ae.pt": state})
    return rel, sid, d


def test_dictionary_learning_release(tmp_path):
    rel, sid, d = write_dictionary_learning(tmp_path)
    enc_w, enc_b, _, b_dec = _encoder_decoder(d, 32)
    sae = load_pretrained(rel, sid, cache_dir=tmp_path)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hook_name) == (
        "topk", 4, "blocks.3.hook_resid_post")
    x = rand(5, d, seed=6)
    pre = (x - b_dec) @ enc_w.T + enc_b
    vals, idx = pre.topk(4, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    assert close(sae.encode(x), acts)


def write_mwhanna(cache):
    d, n = 1024, 6  # Qwen3-0.6B
    rel, sid = "mwhanna-qwen3-0.6b-transcoders-lowl0", "layer_0"
    w_enc = rand(n, d, seed=1, scale=d ** -0.5)  # circuit-tracer stores [d_sae, d_in]
    p = {"W_enc": w_enc, "W_dec": rand(n, d, seed=2), "b_enc": rand(n, seed=3, scale=0.1),
         "b_dec": rand(d, seed=4)}
    hf_cache(cache, entry(rel, sid).repo_id, {
        "layer_0.safetensors": p,
        "config.yaml": "model_name: Qwen/Qwen3-0.6B\nmodel_kind: transcoder_set\n"
                       "feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n",
        "wandb-config.yaml": f"d_model:\n  value: {d}\nd_feature:\n  value: {n}\n"
                             "batch_size:\n  value: 1024\n"})
    return rel, sid, d, p


def test_circuit_tracer_file_release_mwhanna(tmp_path):
    rel, sid, d, p = write_mwhanna(tmp_path)
    tc = load_pretrained(rel, sid, cache_dir=tmp_path)
    assert (tc.cfg.hook_name, tc.cfg.hook_name_out) == ("blocks.0.mlp.hook_in",
                                                        "blocks.0.hook_mlp_out")
    assert tc.cfg.architecture == "standard" and tc.cfg.model_name == "Qwen/Qwen3-0.6B"
    x = rand(4, d, seed=5)
    want = torch.relu(x @ p["W_enc"].T + p["b_enc"]) @ p["W_dec"] + p["b_dec"]
    assert close(tc(x), want)


@pytest.mark.parametrize("write", [write_pythia_sae, write_llama_scope,
                                   write_dictionary_learning, write_mwhanna])
def test_agrees_with_saelens_loading_the_same_cache(tmp_path, monkeypatch, write):
    """SAELens's own `SAE.from_pretrained`, pointed at the same HF cache (offline), gives the
    same latents and outputs (the layouts where SAELens reads the width from the files rather
    than from the release's name)."""
    import huggingface_hub.constants

    rel, sid, d, *_ = write(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from sae_lens import SAE

    theirs = SAE.from_pretrained(rel, sid)
    ours = load_pretrained(rel, sid, cache_dir=tmp_path)
    x = rand(6, d, seed=21, scale=1 / (entry(rel, sid).norm_scaling_factor or 1))
    z = theirs.encode(x)
    assert z.count_nonzero() > 0
    assert close(ours.encode(x), z)
    assert close(ours(x), theirs.decode(z))


def test_cross_layer_transcoder_layer_sums_its_decoders(tmp_path):
    d, n, i = 2304, 2, 1
    rel, sid = "mntss-gemma-2-2b-2.5m-clt-as-per-layer", "layer_1"
    e = entry(rel, sid)
    w_dec = rand(n, 25, d, seed=2)  # layer 1 writes to layers 1..25
    enc = {f"W_enc_{i}": rand(n, d, seed=1, scale=d ** -0.5), f"b_enc_{i}": rand(n, seed=3),
           f"b_dec_{i}": rand(d, seed=4)}
    hf_cache(tmp_path, e.repo_id, {
        f"W_enc_{i}.safetensors": enc, f"W_dec_{i}.safetensors": {f"W_dec_{i}": w_dec},
        "config.yaml": "model_name: google/gemma-2-2b\nmodel_kind: cross_layer_transcoder\n"
                       "feature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n"})
    tc = load_pretrained(rel, sid, cache_dir=tmp_path)
    assert tc.cfg.hook_name == "blocks.1.hook_resid_mid"
    assert close(tc.W_dec, w_dec.sum(dim=1))


def test_qwen_scope_topk_k_from_the_repo_name(tmp_path):
    d, n = 2048, 64
    rel, sid = "qwen-scope-3-1.7b-base-w32k-l50", "layer0"
    e = entry(rel, sid)
    state = {"W_enc": rand(n, d, seed=1, scale=d ** -0.5), "W_dec": rand(d, n, seed=2),
             "b_enc": rand(n, seed=3), "b_dec": rand(d, seed=4)}
    hf_cache(tmp_path, e.repo_id, {e.path: state})
    sae = load_pretrained(rel, sid, cache_dir=tmp_path)
    assert (sae.cfg.architecture, sae.cfg.k, sae.cfg.hook_name) == (
        "topk", 50, "blocks.0.hook_resid_post")
    x = rand(3, d, seed=5)
    pre = x @ state["W_enc"].T + state["b_enc"]  # reads x, not x - b_dec
    vals, idx = pre.topk(50, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    assert close(sae(x), acts @ state["W_dec"].T + state["b_dec"])


def test_pickled_state_dict_releases(tmp_path):
    d, n = 4096, 4
    rel, sid = "goodfire-llama-3.1-8b-instruct", "layer_19"
    e = entry(rel, sid)
    s = {"encoder_linear.weight": rand(n, d, seed=1, scale=d ** -0.5),
         "encoder_linear.bias": rand(n, seed=2), "decoder_linear.weight": rand(d, n, seed=3),
         "decoder_linear.bias": rand(d, seed=4)}
    hf_cache(tmp_path, e.repo_id, {e.path: s})
    sae = load_pretrained(rel, sid, cache_dir=tmp_path)
    assert sae.cfg.hook_name == "blocks.19.hook_resid_post"
    x = rand(3, d, seed=5)
    want = torch.relu(x @ s["encoder_linear.weight"].T + s["encoder_linear.bias"]) \
        @ s["decoder_linear.weight"].T + s["decoder_linear.bias"]
    assert close(sae(x), want)
    # GPT-2 attention SAEs on the concatenated heads
    e = entry("gpt2-small-hook-z-kk", "blocks.0.hook_z")
    p = jumprelu_params(768, 4)
    del p["threshold"]
    hf_cache(tmp_path, e.repo_id, {e.path: p, e.path.split(".pt")[0] + "_cfg.json": {
        "act_size": 768, "dict_size": 4, "act_name": "blocks.0.attn.hook_z"}})
    sae = load_pretrained("gpt2-small-hook-z-kk", "blocks.0.hook_z", cache_dir=tmp_path)
    assert sae.cfg.hook_name == "blocks.0.attn.hook_z" and sae.cfg.d_in == 768


def test_unsupported_layout_says_why():
    with pytest.raises(ConfigError, match="TemporalSAE"):
        load_pretrained("temporal-sae-gemma-2-2b", "blocks.12.hook_resid_post")


# ============================================================== where the files are
def test_local_dir_as_repo_mirror_or_flat_folder(tmp_path):
    rel, sid = "gemma-scope-2b-pt-res-canonical", "layer_3/width_16k/canonical"
    e = entry(rel, sid)
    p = jumprelu_params(2304, 3)
    local(tmp_path / "mirror", {f"{e.path}/params.npz": p})
    local(tmp_path / "flat", {"params.npz": p})
    a = load_pretrained(rel, sid, local_dir=tmp_path / "mirror")
    b = load_pretrained(rel, sid, local_dir=tmp_path / "flat")
    assert torch.equal(a.W_dec, b.W_dec) and close(a.W_dec, p["W_dec"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PretrainedNotFound, match="params.npz"):
        load_pretrained(rel, sid, local_dir=tmp_path / "empty")


def test_offline_miss_names_release_id_repo_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = entry("gemma-scope-2b-pt-res-canonical", "layer_3/width_16k/canonical")
    with pytest.raises(PretrainedNotFound) as err:
        load_pretrained("gemma-scope-2b-pt-res-canonical", "layer_3/width_16k/canonical",
                        cache_dir=tmp_path)
    msg = str(err.value)
    for part in ("HF_HUB_OFFLINE", "gemma-scope-2b-pt-res-canonical",
                 "layer_3/width_16k/canonical", "google/gemma-scope-2b-pt-res",
                 f"{e.path}/params.npz", "hf download", "local_dir"):
        assert part in msg, part


# ============================================================== the model check
def _gemma2_config():
    from transformers import Gemma2Config

    return Gemma2Config(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                        num_key_value_heads=4, head_dim=256, intermediate_size=9216,
                        vocab_size=256)


def test_model_check_accepts_the_right_model_and_names_the_mismatch(tmp_path, tiny_llama):
    rel, sid = "gemma-scope-2b-pt-att-canonical", "layer_1/width_16k/canonical"
    e = entry(rel, sid)
    hf_cache(tmp_path, e.repo_id, {f"{e.path}/params.npz": jumprelu_params(2048, 3)})
    sae = load_pretrained(rel, sid, cache_dir=tmp_path, model=_gemma2_config())  # z: 8 x 256
    assert sae.cfg.d_in == 2048
    with pytest.raises(ModelMismatch, match="reads 'blocks.1.attn.hook_z' with width 2048.*"
                                            "width 64 there"):
        load_pretrained(rel, sid, cache_dir=tmp_path, model=tiny_llama)


def tiny_sae_repo(cache, layer: int) -> None:
    """A TopK SAE for the tiny Llama (d_model 64) at `blocks.{layer}.hook_resid_post`, as
    folder `l{layer}` of Hub repo `me/tiny-saes` in the SAELens layout, in the HF cache."""
    from saes.architectures import architecture_class
    from saes.base import SAEConfig
    from saes.formats import save_saelens

    cfg = SAEConfig(architecture="topk", d_in=64, d_sae=32, k=4,
                    hook_name=f"blocks.{layer}.hook_resid_post")
    sae = architecture_class("topk")(cfg).initialise(seed=layer)
    save_saelens(sae, cache / "models--me--tiny-saes" / "snapshots" / COMMIT / f"l{layer}")
    (cache / "models--me--tiny-saes" / "refs").mkdir(exist_ok=True)
    (cache / "models--me--tiny-saes" / "refs" / "main").write_text(COMMIT)


def test_model_check_hooks_of_a_tiny_model(tmp_path, tiny_llama, tiny_llama_dir):
    """A Hub repo id in the SAELens layout works as a release; the hook must exist."""
    for layer in (1, 5):
        tiny_sae_repo(tmp_path, layer)
    got = load_pretrained("me/tiny-saes", "l1", cache_dir=tmp_path, model=tiny_llama)
    assert got.cfg.hook_name == "blocks.1.hook_resid_post"
    load_pretrained("me/tiny-saes", "l1", cache_dir=tmp_path, model=str(tiny_llama_dir))
    with pytest.raises(ModelMismatch, match="blocks.5.hook_resid_post"):
        load_pretrained("me/tiny-saes", "l5", cache_dir=tmp_path, model=tiny_llama)


def _pythia_layer5_sae(cache_dir) -> None:
    """The Pythia-70M residual SAE of layer 5 (SAELens's layout, 8 latents) in an HF cache."""
    d, n = 512, 8
    p = jumprelu_params(d, n)
    del p["threshold"]
    hf_cache(cache_dir, "ctigges/pythia-70m-deduped__res-sm_processed", {
        "5-res-sm/cfg.json": {"d_in": d, "d_sae": n, "hook_point": "blocks.5.hook_resid_post",
                              "dtype": "float32"},
        "5-res-sm/sae_weights.safetensors": p})


def test_model_check_on_a_family_without_adapter_uses_layers_and_widths(tmp_path):
    from transformers import BloomConfig

    _pythia_layer5_sae(tmp_path)
    # BLOOM has no adapter (interp.models.families): checked by layer range and width
    deep = BloomConfig(hidden_size=512, n_layer=6, n_head=8, vocab_size=128)
    load_pretrained("pythia-70m-deduped-res-sm", "blocks.5.hook_resid_post",
                    cache_dir=tmp_path, model=deep)
    shallow = BloomConfig(hidden_size=512, n_layer=4, n_head=8, vocab_size=128)
    with pytest.raises(ModelMismatch, match="layers 0..3"):
        load_pretrained("pythia-70m-deduped-res-sm", "blocks.5.hook_resid_post",
                        cache_dir=tmp_path, model=shallow)


def test_model_check_on_a_family_with_adapter_names_its_hooks(tmp_path):
    from transformers import GPTNeoXConfig

    _pythia_layer5_sae(tmp_path)
    shallow = GPTNeoXConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                            intermediate_size=2048, vocab_size=128)
    with pytest.raises(ModelMismatch, match="does not have.*blocks.3.hook_resid_post"):
        load_pretrained("pythia-70m-deduped-res-sm", "blocks.5.hook_resid_post",
                        cache_dir=tmp_path, model=shallow)


# ============================================================== transcoder sets
CT_CONFIG = ("model_name: {model}\nmodel_kind: {kind}\nfeature_input_hook: mlp.hook_in\n"
             "feature_output_hook: {out}\n")


def _plt(d, n, seed, threshold=None, k=None):
    """A circuit-tracer per-layer transcoder file's tensors (W_enc stored [d_sae, d_in])."""
    t = {"W_enc": rand(n, d, seed=seed, scale=d ** -0.5), "W_dec": rand(n, d, seed=seed + 1,
                                                                       scale=0.05),
         "b_enc": rand(n, seed=seed + 2, scale=0.1), "b_dec": rand(d, seed=seed + 3, scale=0.01)}
    if threshold is not None:
        t["activation_function.threshold"] = torch.full((n,), threshold)
    if k is not None:
        t["k"] = torch.tensor(k)
    return t


@pytest.fixture()
def tiny_set(tmp_path, tiny_llama_dir):
    """A circuit-tracer transcoder set for the tiny Llama, as a local directory."""
    root = tmp_path / "tiny-set"
    local(root, {"config.yaml": CT_CONFIG.format(model=tiny_llama_dir, kind="transcoder_set",
                                                 out="mlp.hook_out"),
                 "layer_0.safetensors": _plt(64, 96, 1, threshold=0.05),
                 "layer_1.safetensors": _plt(64, 96, 11)})
    return root


def test_circuit_tracer_directory_set_drives_an_attribution_graph(tiny_set, tiny_llama):
    from circuits.attribution import attribute
    from circuits.pretrained import load_pretrained_transcoders

    tcs = load_pretrained_transcoders(tiny_set, model=tiny_llama)
    assert tcs.layers == [0, 1]
    assert tcs[0].cfg.architecture == "jumprelu" and tcs[1].cfg.architecture == "standard"
    assert tcs[1].cfg.hook_name_out == "blocks.1.hook_mlp_out"
    graph = attribute(tiny_llama, tcs, "def f(x): return x + 1")
    assert graph.n_features > 0
    scale = float(graph.node_input[~torch.isnan(graph.node_input)].abs().max())
    assert graph.completeness_error() < 1e-4 * max(1.0, scale)


def test_set_config_may_list_absolute_local_files(tmp_path, tiny_llama):
    from saes.pretrained.sets import load_pretrained_set

    files = tmp_path / "files"
    local(files, {"a.safetensors": _plt(64, 8, 1), "b.safetensors": _plt(64, 8, 2, k=3)})
    local(tmp_path / "set", {"config.yaml": CT_CONFIG.format(
        model="tiny", kind="transcoder_set", out="hook_mlp_out")
        + f"transcoders:\n  - {files / 'a.safetensors'}\n  - {files / 'b.safetensors'}\n"})
    got = load_pretrained_set(tmp_path / "set", model=tiny_llama)
    assert got.layers == [0, 1] and got.by_layer[1].cfg.architecture == "topk"
    assert got.by_layer[1].cfg.k == 3 and got.by_layer[0].cfg.architecture == "standard"


def test_gemma_alias_reads_listed_hub_files_from_the_cache(tmp_path):
    files = [f"hf://google/gemma-scope-2b-pt-transcoders/layer_{i}/width_16k/average_l0_7{i}/"
             "params.npz" for i in range(26)]
    hf_cache(tmp_path, "mwhanna/gemma-scope-transcoders", {
        "config.yaml": CT_CONFIG.format(model="google/gemma-2-2b", kind="transcoder_set",
                                        out="hook_mlp_out")
        + "transcoders:\n" + "".join(f"  - {f}\n" for f in files)})
    params = {i: jumprelu_params(2304, 3, seed=i) for i in (0, 1)}
    hf_cache(tmp_path, "google/gemma-scope-2b-pt-transcoders", {
        f"layer_{i}/width_16k/average_l0_7{i}/params.npz": params[i] for i in (0, 1)})
    from saes.pretrained.sets import load_pretrained_set

    got = load_pretrained_set("gemma", layers=[0, 1], cache_dir=tmp_path, model=_gemma2_config())
    assert got.layers == [0, 1] and got.model == "google/gemma-2-2b"
    tc = got.by_layer[1]
    assert (tc.cfg.hook_name, tc.cfg.hook_name_out) == ("blocks.1.mlp.hook_in",
                                                        "blocks.1.hook_mlp_out")
    x = rand(3, 2304, seed=3)
    p = params[1]
    assert close(tc(x), jump(x @ p["W_enc"] + p["b_enc"], 0.3) @ p["W_dec"] + p["b_dec"])
    with pytest.raises(ConfigError, match="no layer"):
        load_pretrained_set("gemma", layers=[30], cache_dir=tmp_path)
    with pytest.raises(PretrainedNotFound, match="layer 2 of"):
        load_pretrained_set("gemma", layers=[2], cache_dir=tmp_path)


def test_llama_alias_finds_layer_files_in_the_cached_snapshot(tmp_path):
    cfg = CT_CONFIG.format(model="meta-llama/Llama-3.2-1B", kind="transcoder_set",
                           out="mlp.hook_out")
    files = {f"layer_{i}.safetensors": _plt(2048, 8, i, k=2) for i in range(3)}
    hf_cache(tmp_path, "mntss/transcoder-Llama-3.2-1B", {"config.yaml": cfg + "activation: topk\n"
                                                         "k: 2\n", **files})
    from saes.pretrained.sets import load_pretrained_set

    got = load_pretrained_set("llama", cache_dir=tmp_path)
    assert got.layers == [0, 1, 2]
    assert all(t.cfg.architecture == "topk" and t.cfg.k == 2 for t in got.by_layer.values())
    # a file that contradicts its config fails loudly (circuit-tracer 0.5.0 loads it as ReLU)
    hf_cache(tmp_path, "me/contradiction", {"config.yaml": cfg + "activation: relu\n",
                                            "layer_0.safetensors": _plt(64, 8, 0, threshold=0.1)})
    with pytest.raises(ConfigError, match="threshold but the config says relu"):
        load_pretrained_set("me/contradiction", cache_dir=tmp_path)
    hf_cache(tmp_path, "me/clt", {"config.yaml": CT_CONFIG.format(
        model="m", kind="cross_layer_transcoder", out="hook_mlp_out")})
    with pytest.raises(ConfigError, match="per-layer"):
        load_pretrained_set("me/clt", cache_dir=tmp_path)


def test_saelens_transcoder_release_as_a_set_needs_one_id_per_layer(tmp_path):
    rel = "gemma-scope-2-1b-pt-transcoders"
    from saes.pretrained.sets import load_pretrained_set

    with pytest.raises(ConfigError, match=r"select='transcoder/layer_\{layer\}_width"):
        load_pretrained_set(rel, layers=[13], cache_dir=tmp_path)
    e = entry(rel, "transcoder/layer_13_width_16k_l0_big")
    p = jumprelu_params(1152, 3)
    hf_cache(tmp_path, e.repo_id, {f"{e.path}/params.safetensors": {
        "w_enc": p["W_enc"], "w_dec": p["W_dec"], "b_enc": p["b_enc"], "b_dec": p["b_dec"],
        "threshold": p["threshold"]}})
    got = load_pretrained_set(rel, layers=[13], select="transcoder/layer_{layer}_width_16k_l0_big",
                              cache_dir=tmp_path)
    assert got.by_layer[13].cfg.hook_name == "blocks.13.ln2.hook_normalized"


# ============================================================== the CLI and the workspace
def _cli(*args):
    from typer.testing import CliRunner

    from interp.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_lists_releases_and_ids_and_suggests_names():
    res = _cli("pretrained", "list", "--model", "EleutherAI/pythia-70m-deduped")
    assert res.exit_code == 0, res.output
    assert "pythia-70m-deduped-res-sm" in res.output and "gemma-scope" not in res.output
    res = _cli("pretrained", "list", "--release", "pythia-70m-deduped-res-sm")
    assert res.exit_code == 0 and "blocks.3.hook_resid_post  (3-res-sm)" in res.output
    res = _cli("pretrained", "list", "--release", "pythia-70m-deduped-rez-sm")
    assert res.exit_code == 2 and "Did you mean: pythia-70m-deduped-res-sm" in res.output


def test_cli_get_writes_runs_that_features_and_attribution_read(tmp_path, tiny_llama,
                                                                 tiny_llama_dir, tiny_set):
    from circuits.transcoders import load_transcoders
    from interp.workspace import load_run
    from saes.features import FeatureStatsConfig, features_run
    from saes.features.runs import load_dictionary

    tiny_sae_repo(tmp_path / "hub", 1)
    res = _cli("pretrained", "get", "me/tiny-saes", "l1", "--cache-dir", tmp_path / "hub",
               "--model", tiny_llama_dir, "--out", tmp_path / "sae-run")
    assert res.exit_code == 0, res.output
    run = load_run(tmp_path / "sae-run")
    assert run.kind == "sae" and run.status == "done"
    assert run.config["model"] == str(tiny_llama_dir) and run.config["pretrained"]["sae_id"] == "l1"
    loaded, facts = load_dictionary(tmp_path / "sae-run")
    ref = load_pretrained("me/tiny-saes", "l1", cache_dir=tmp_path / "hub")
    assert torch.equal(loaded.W_dec, ref.W_dec) and facts["hook"] == "blocks.1.hook_resid_post"
    feats = features_run(tmp_path / "sae-run", 1024, out=tmp_path / "feats", model=tiny_llama,
                         cfg=FeatureStatsConfig(top_n=2), progress=False)
    assert feats.status == "done" and feats.metrics["d_sae"] == 32

    res = _cli("pretrained", "get", tiny_set, "--out", tmp_path / "set-run")
    assert res.exit_code == 0, res.output
    assert load_run(tmp_path / "set-run").kind == "transcoders"
    tcs = load_transcoders(tmp_path / "set-run")
    assert tcs.layers == [0, 1] and tcs[0].cfg.architecture == "jumprelu"
    res = _cli("attribute", "--prompt", "def f(x): return x", "--transcoders",
               tmp_path / "set-run", "--model", tiny_llama_dir, "--out", tmp_path / "graph")
    assert res.exit_code == 0, res.output
    assert load_run(tmp_path / "graph").metrics["completeness_error"] < 1e-3
