"""File formats: SAELens round trips (both directions, checked with sae_lens itself), the
sparsify and dictionary_learning importers against re-implementations of their forwards, and
the errors a bad directory gives."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from interp.errors import ConfigError, ModelLoadError
from saes.architectures import architecture_class, create_sae
from saes.base import SAEConfig
from saes.formats import (SAELENS_VERSION, convert_dictionary_learning, load_dictionary_learning,
                          load_saelens, load_saelens_from_hub, load_saelens_sparsity,
                          load_sparsify, save_saelens)

D_IN, D_SAE, D_OUT = 16, 64, 12
ATOL = 1e-5




@pytest.fixture(scope="module")
def sae_lens():
    import sae_lens

    return sae_lens


def randomise(sae, seed: int = 0):
    """Random weights everywhere, thresholds in a range that leaves some latents active."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sae.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        if hasattr(sae, "log_threshold"):
            sae.log_threshold.copy_((0.05 + 0.5 * torch.rand(sae.cfg.d_sae, generator=g)).log())
        if "threshold" in dict(sae.named_buffers()):
            sae.threshold.fill_(0.2)
    return sae


def x_batch(n=32, d=D_IN, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


TC = dict(transcoder=True, d_out=D_OUT)
EXPORTABLE = {  # id: (architecture, config kwargs, SAELens class it must load as)
    "topk": ("topk", {}, "TopKSAE"),
    "topk-transcoder-same-width": ("topk", dict(transcoder=True), "TopKSAE"),
    "batchtopk": ("batchtopk", {}, "JumpReLUSAE"),
    "batchtopk-transcoder": ("batchtopk", TC, "JumpReLUTranscoder"),
    "batchtopk-skip-transcoder": ("batchtopk", dict(skip=True, **TC), "JumpReLUSkipTranscoder"),
    "standard": ("standard", {}, "StandardSAE"),
    "standard-transcoder": ("standard", TC, "Transcoder"),
    "standard-skip-transcoder": ("standard", dict(skip=True, **TC), "SkipTranscoder"),
    "jumprelu": ("jumprelu", {}, "JumpReLUSAE"),
    "jumprelu-transcoder": ("jumprelu", TC, "JumpReLUTranscoder"),
    "jumprelu-skip-transcoder": ("jumprelu", dict(skip=True, **TC), "JumpReLUSkipTranscoder"),
    "gated": ("gated", {}, "GatedSAE"),
    "matryoshka_batchtopk": ("matryoshka_batchtopk", dict(matryoshka_widths=(8, 32)),
                             "JumpReLUSAE"),
    "discrete": ("discrete", {}, "TopKSAE"),
}


def _make(arch, kw, seed=0):
    own = {"k": 4} if "k" in architecture_class(arch).options else {}
    cfg = SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, hook_name="blocks.1.hook_mlp_in",
                    hook_name_out="blocks.1.hook_mlp_out", model_name="tiny", **own, **kw)
    return randomise(create_sae(cfg), seed)


def _assert_same_as_saelens(ours, theirs, x):
    with torch.no_grad():
        acts = ours.encode(x)
        assert torch.allclose(theirs.encode(x), acts, atol=ATOL)
        assert torch.allclose(theirs(x), ours(x), atol=ATOL)
        skip = x @ ours.W_skip.T if ours.W_skip is not None else 0.0  # SAELens adds it in forward
        assert torch.allclose(theirs.decode(acts) + skip, ours.decode(acts, x), atol=ATOL)
    assert bool((acts > 0).any()) and bool((acts == 0).any())


@pytest.mark.parametrize("case", list(EXPORTABLE))
def test_saelens_round_trip(case, tmp_path, sae_lens):
    arch, kw, cls_name = EXPORTABLE[case]
    sae = _make(arch, kw)
    x = x_batch()
    save_saelens(sae, tmp_path / "a", metadata={"context_size": 128})
    raw = json.loads((tmp_path / "a" / "cfg.json").read_text())
    assert raw["metadata"]["sae_lens_version"] == SAELENS_VERSION
    assert raw["metadata"]["hook_name"] == "blocks.1.hook_mlp_in"
    assert raw["metadata"]["context_size"] == 128
    assert raw["normalize_activations"] == "none" and raw["dtype"] == "float32"
    assert ("d_out" in raw) == sae.cfg.transcoder
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "a"))
    assert type(theirs).__name__ == cls_name
    _assert_same_as_saelens(sae, theirs, x)

    ours = load_saelens(tmp_path / "a")  # our loader restores the training architecture
    assert type(ours) is type(sae) and ours.cfg == sae.cfg
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), sae.encode(x), atol=ATOL)
        assert torch.allclose(ours(x), sae(x), atol=ATOL)
    for name, t in sae.state_dict().items():
        assert torch.allclose(ours.state_dict()[name], t, atol=1e-6), name

    # fold a normalisation scale in, then the exported file still matches SAELens exactly
    s_in, s_out = (2.5, 0.7) if sae.cfg.transcoder else (2.5, 2.5)
    folded = _make(arch, kw)
    folded.fold_scaling(s_in, s_out)
    with torch.no_grad():
        assert torch.allclose(folded.encode(x), sae.encode(s_in * x), atol=1e-4)
        assert torch.allclose(folded(x), sae(s_in * x) / s_out, atol=1e-4)
    save_saelens(folded, tmp_path / "b")
    _assert_same_as_saelens(folded, sae_lens.SAE.load_from_disk(str(tmp_path / "b")), x)


@pytest.mark.parametrize("arch,kw", [("gated", TC), ("topk", dict(skip=True, **TC))])
def test_saelens_export_refuses_what_saelens_cannot_load(arch, kw, tmp_path):
    with pytest.raises(ConfigError, match="SAELens"):
        save_saelens(_make(arch, kw), tmp_path)


def test_saelens_sparsity_file(tmp_path):
    sae = _make("topk", {})
    freq = torch.rand(D_SAE)
    save_saelens(sae, tmp_path, sparsity=torch.log10(freq + 1e-10))
    assert torch.allclose(load_saelens_sparsity(tmp_path), torch.log10(freq + 1e-10))
    assert set(load_file(tmp_path / "sparsity.safetensors")) == {"sparsity"}
    with pytest.raises(ConfigError, match="log10"):
        save_saelens(sae, tmp_path, sparsity=freq)  # raw frequencies are rejected
    save_saelens(sae, tmp_path)  # re-saving without sparsity removes the stale file
    assert load_saelens_sparsity(tmp_path) is None


# ------------------------------------------------------------ directories written by SAELens
def _saelens_cases(sl):
    return {
        "topk": lambda: sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5)),
        "topk-rescaled": lambda: sl.TopKSAE(sl.TopKSAEConfig(
            d_in=D_IN, d_sae=D_SAE, k=5, rescale_acts_by_decoder_norm=True)),
        "jumprelu": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "jumprelu-no-bdec": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(
            d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)),
        "standard": lambda: sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "gated": lambda: sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "gated-no-bdec": lambda: sl.GatedSAE(sl.GatedSAEConfig(
            d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)),
        "transcoder": lambda: sl.Transcoder(sl.TranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)),
        "skip_transcoder": lambda: sl.SkipTranscoder(sl.SkipTranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)),
        "jumprelu_transcoder": lambda: sl.JumpReLUTranscoder(sl.JumpReLUTranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)),
        "jumprelu_skip_transcoder": lambda: sl.JumpReLUSkipTranscoder(
            sl.JumpReLUSkipTranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT,
                                            apply_b_dec_to_input=False)),
    }


SAELENS_WRITTEN = ["topk", "topk-rescaled", "jumprelu", "jumprelu-no-bdec", "standard", "gated",
                   "gated-no-bdec", "transcoder", "skip_transcoder", "jumprelu_transcoder",
                   "jumprelu_skip_transcoder"]


@pytest.mark.parametrize("case", SAELENS_WRITTEN)
def test_load_directory_written_by_saelens(case, tmp_path, sae_lens):
    theirs = _saelens_cases(sae_lens)[case]()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
            if name == "threshold":
                p.copy_(0.05 + 0.4 * torch.rand(p.shape, generator=g))
    theirs.save_model(str(tmp_path))
    ours = load_saelens(tmp_path)
    assert ours.cfg.d_sae == D_SAE and ours.cfg.transcoder == ("transcoder" in case)
    x = x_batch()
    with torch.no_grad():
        acts = ours.encode(x)
        assert torch.allclose(theirs.encode(x), acts, atol=ATOL)
        assert torch.allclose(theirs(x), ours(x), atol=ATOL)
    assert bool((acts > 0).any()) and bool((acts == 0).any())


# ------------------------------------------------------------ sparsify
def _sparsify_dir(path, *, transcode=False, skip=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = {"activation": "topk", "expansion_factor": 4, "normalize_decoder": True,
           "num_latents": 0, "k": 5, "multi_topk": False, "skip_connection": skip,
           "transcode": transcode, "d_in": D_IN}
    L = D_IN * 4
    w = {"encoder.weight": torch.randn(L, D_IN, generator=g) / 4,
         "encoder.bias": 0.1 * torch.randn(L, generator=g),
         "W_dec": torch.randn(L, D_IN, generator=g) / 4, "b_dec": 0.3 * torch.randn(D_IN, generator=g)}
    if skip:
        w["W_skip"] = 0.1 * torch.randn(D_IN, D_IN, generator=g)
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(path / "sae.safetensors"))
    return cfg, w


def _sparsify_forward(cfg, w, x):
    """sparsify's SparseCoder: relu(encoder(x [- b_dec])) -> top-k -> sum acts * W_dec rows +
    b_dec (+ x @ W_skip.T)."""
    x_in = x if cfg["transcode"] else x - w["b_dec"]
    pre = F.relu(F.linear(x_in, w["encoder.weight"], w["encoder.bias"]))
    acts, idx = pre.topk(cfg["k"], dim=-1)
    y = (acts[..., None] * w["W_dec"][idx]).sum(-2) + w["b_dec"]
    if cfg["skip_connection"]:
        y = y + x @ w["W_skip"].T
    return y, torch.zeros_like(pre).scatter(-1, idx, acts)


@pytest.mark.parametrize("transcode,skip", [(False, False), (True, False), (True, True),
                                            (False, True)])
def test_load_sparsify(transcode, skip, tmp_path):
    folder = tmp_path / "layers.3"
    cfg, w = _sparsify_dir(folder, transcode=transcode, skip=skip)
    (tmp_path / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m"}))
    sae = load_sparsify(folder)
    assert sae.architecture == "topk" and sae.cfg.d_sae == 64 and sae.cfg.k == 5
    assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert sae.cfg.model_name == "EleutherAI/pythia-70m"
    x = x_batch()
    y_ref, acts_ref = _sparsify_forward(cfg, w, x)
    with torch.no_grad():
        assert torch.allclose(sae(x), y_ref, atol=ATOL)
        assert torch.allclose(sae.encode(x), acts_ref, atol=ATOL)


def test_load_sparsify_names_a_wrong_tensor(tmp_path):
    _, w = _sparsify_dir(tmp_path / "l", seed=0)
    w["encoder.weight"] = w["encoder.weight"].T.contiguous()
    save_file(w, str(tmp_path / "l" / "sae.safetensors"))
    with pytest.raises(ConfigError, match=r"encoder\.weight.*sae\.safetensors|sae\.safetensors.*encoder\.weight"):
        load_sparsify(tmp_path / "l")


# ------------------------------------------------------------ dictionary_learning
def _dl_case(dict_class, g):
    """(state dict in dictionary_learning's keys, reference forward x -> (acts, x_hat))."""
    D, Fd = D_IN, D_SAE

    def r(*shape, s=0.3):
        return s * torch.randn(*shape, generator=g)

    if dict_class == "AutoEncoder":
        s = {"encoder.weight": r(Fd, D), "encoder.bias": r(Fd), "decoder.weight": r(D, Fd),
             "bias": r(D)}

        def fwd(x):
            f = F.relu(F.linear(x - s["bias"], s["encoder.weight"], s["encoder.bias"]))
            return f, F.linear(f, s["decoder.weight"]) + s["bias"]
    elif dict_class == "AutoEncoderNew":
        s = {"encoder.weight": r(Fd, D), "encoder.bias": r(Fd), "decoder.weight": r(D, Fd),
             "decoder.bias": r(D)}

        def fwd(x):
            f = F.relu(F.linear(x, s["encoder.weight"], s["encoder.bias"]))
            return f, F.linear(f, s["decoder.weight"], s["decoder.bias"])
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        s = {"encoder.weight": r(Fd, D), "encoder.bias": r(Fd), "decoder.weight": r(D, Fd),
             "b_dec": r(D), "k": torch.tensor(5, dtype=torch.int), "threshold": torch.tensor(0.25)}

        def fwd(x):
            post = F.relu(F.linear(x - s["b_dec"], s["encoder.weight"], s["encoder.bias"]))
            if dict_class == "BatchTopKSAE":  # encode(use_threshold=True), the inference path
                f = post * (post > s["threshold"])
            else:
                v, i = post.topk(5, dim=-1)
                f = torch.zeros_like(post).scatter(-1, i, v)
            return f, F.linear(f, s["decoder.weight"]) + s["b_dec"]
    elif dict_class == "MatryoshkaBatchTopKSAE":
        s = {"W_enc": r(D, Fd), "b_enc": r(Fd), "W_dec": r(Fd, D), "b_dec": r(D),
             "k": torch.tensor(5, dtype=torch.int), "threshold": torch.tensor(0.25),
             "group_sizes": torch.tensor([8, 24, 32])}

        def fwd(x):
            post = F.relu((x - s["b_dec"]) @ s["W_enc"] + s["b_enc"])
            f = post * (post > s["threshold"])
            return f, f @ s["W_dec"] + s["b_dec"]
    elif dict_class == "JumpReluAutoEncoder":
        s = {"W_enc": r(D, Fd), "b_enc": r(Fd), "W_dec": r(Fd, D), "b_dec": r(D),
             "threshold": 0.05 + 0.4 * torch.rand(Fd, generator=g)}

        def fwd(x):
            pre = x @ s["W_enc"] + s["b_enc"]  # no b_dec subtraction
            f = F.relu(pre * (pre > s["threshold"]))
            return f, f @ s["W_dec"] + s["b_dec"]
    else:  # GatedAutoEncoder
        s = {"decoder_bias": r(D), "encoder.weight": r(Fd, D), "r_mag": r(Fd),
             "gate_bias": r(Fd), "mag_bias": r(Fd), "decoder.weight": r(D, Fd)}

        def fwd(x):
            x_enc = F.linear(x - s["decoder_bias"], s["encoder.weight"])
            f = (x_enc + s["gate_bias"] > 0).float() * F.relu(s["r_mag"].exp() * x_enc + s["mag_bias"])
            return f, F.linear(f, s["decoder.weight"]) + s["decoder_bias"]
    return s, fwd


DL_CLASSES = {"AutoEncoder": "standard", "AutoEncoderNew": "standard", "AutoEncoderTopK": "topk",
              "BatchTopKSAE": "batchtopk", "MatryoshkaBatchTopKSAE": "matryoshka_batchtopk",
              "JumpReluAutoEncoder": "jumprelu", "GatedAutoEncoder": "gated"}


def _dl_config(path, dict_class):
    trainer = {"dict_class": dict_class, "activation_dim": D_IN, "dict_size": D_SAE, "layer": 3,
               "lm_name": "EleutherAI/pythia-70m-deduped", "k": 5}
    (path / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"ctx_len": 128}}))


@pytest.mark.parametrize("dict_class", list(DL_CLASSES))
def test_load_dictionary_learning(dict_class, tmp_path):
    state, fwd = _dl_case(dict_class, torch.Generator().manual_seed(0))
    save_file(state, str(tmp_path / "ae.safetensors"))
    _dl_config(tmp_path, dict_class)
    sae = load_dictionary_learning(tmp_path)
    assert sae.architecture == DL_CLASSES[dict_class]
    assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    x = x_batch()
    acts_ref, y_ref = fwd(x)
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), acts_ref, atol=ATOL)
        assert torch.allclose(sae(x), y_ref, atol=ATOL)
    assert bool((acts_ref > 0).any()) and bool((acts_ref == 0).any())
    if dict_class == "MatryoshkaBatchTopKSAE":
        assert sae.widths == (8, 32, 64)


@dataclass
class _NotATensor:
    value: int = 1


def test_dictionary_learning_pt_is_read_weights_only_and_converted(tmp_path):
    state, fwd = _dl_case("AutoEncoderTopK", torch.Generator().manual_seed(1))
    torch.save(state, tmp_path / "ae.pt")
    _dl_config(tmp_path, "AutoEncoderTopK")
    x = x_batch()
    with torch.no_grad():
        assert torch.allclose(load_dictionary_learning(tmp_path)(x), fwd(x)[1], atol=ATOL)
    out = convert_dictionary_learning(tmp_path)
    assert out.name == "ae.safetensors" and set(load_file(out)) == set(state)
    (tmp_path / "ae.pt").unlink()
    with torch.no_grad():
        assert torch.allclose(load_dictionary_learning(tmp_path)(x), fwd(x)[1], atol=ATOL)

    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"encoder.weight": torch.zeros(2, 2), "extra": _NotATensor()}, bad / "ae.pt")
    _dl_config(bad, "AutoEncoderTopK")
    with pytest.raises(ConfigError, match="weights_only"):
        load_dictionary_learning(bad)


def test_dictionary_learning_unknown_class_lists_close_matches(tmp_path):
    _dl_config(tmp_path, "AutoEncoderTopk")
    with pytest.raises(ConfigError, match="AutoEncoderTopK"):
        load_dictionary_learning(tmp_path)


# ------------------------------------------------------------ errors
def test_wrong_shape_missing_and_extra_tensors_are_named(tmp_path):
    save_saelens(_make("jumprelu", {}), tmp_path)
    weights = tmp_path / "sae_weights.safetensors"
    good = load_file(weights)

    save_file({**good, "W_dec": good["W_dec"].T.contiguous()}, str(weights))
    with pytest.raises(ConfigError, match=r"sae_weights\.safetensors.*'W_dec'.*\[16, 64\]"):
        load_saelens(tmp_path)
    save_file({k: v for k, v in good.items() if k != "threshold"}, str(weights))
    with pytest.raises(ConfigError, match=r"sae_weights\.safetensors.*threshold"):
        load_saelens(tmp_path)
    save_file({**good, "log_threshold": good["threshold"].log()}, str(weights))
    with pytest.raises(ConfigError, match="log_threshold"):
        load_saelens(tmp_path)


def test_foreign_cfg_shape_mismatch_is_named(tmp_path, sae_lens):
    sl = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    sl.save_model(str(tmp_path))
    raw = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**raw, "d_sae": 32}))
    with pytest.raises(ConfigError, match=r"'W_enc'.*d_sae=32"):
        load_saelens(tmp_path)


def test_unknown_architecture_lists_close_matches(tmp_path, sae_lens):
    sl = sae_lens.JumpReLUTranscoder(sae_lens.JumpReLUTranscoderConfig(
        d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False))
    sl.save_model(str(tmp_path))
    raw = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**raw, "architecture": "jumprelu_transcodr"}))
    with pytest.raises(ConfigError, match="jumprelu_transcoder"):
        load_saelens(tmp_path)
    with pytest.raises(ConfigError, match="topk"):
        create_sae(SAEConfig(architecture="topkk", d_in=4, d_sae=8))


def test_missing_directory_and_legacy_config(tmp_path):
    with pytest.raises(ConfigError, match="cfg.json"):
        load_saelens(tmp_path / "nothing")
    # a pre-6.0 SAELens config: no version, hook_point, activation_fn_str topk
    sae = _make("topk", {})
    save_file({k: v for k, v in sae.saelens_tensors().items()}, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "d_in": D_IN, "d_sae": D_SAE, "dtype": "torch.float32", "hook_point": "blocks.2.hook_resid_pre",
        "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}, "model_name": "gpt2"}))
    legacy = load_saelens(tmp_path)
    assert legacy.architecture == "topk" and legacy.cfg.k == 4
    assert legacy.cfg.hook_name == "blocks.2.hook_resid_pre" and legacy.cfg.model_name == "gpt2"
    x = x_batch()
    with torch.no_grad():
        assert torch.allclose(legacy(x), sae(x), atol=ATOL)


def test_hub_loader_offline_gives_a_helpful_error(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE") as info:
        load_saelens_from_hub("interp-tests/no-such-sae-repo", "blocks.0.hook_resid_post")
    assert "load_saelens" in str(info.value) and "no-such-sae-repo" in str(info.value)


def test_saved_config_is_complete_for_saelens(tmp_path):
    sae = _make("jumprelu", dict(skip=True, **TC))
    save_saelens(sae, tmp_path)
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert raw["architecture"] == "jumprelu_skip_transcoder"
    assert raw["d_out"] == D_OUT and raw["apply_b_dec_to_input"] is False
    assert raw["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out"
    assert raw["metadata"]["interp_config"] == sae.cfg.to_dict()
    assert set(load_file(tmp_path / "sae_weights.safetensors")) == {
        "W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"}
    assert math.isclose(float(load_file(tmp_path / "sae_weights.safetensors")["threshold"][0]),
                        float(sae.threshold[0].detach()), rel_tol=1e-6)
