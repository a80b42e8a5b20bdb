"""Cross-layer transcoders on disk, in circuit-tracer's layout (so circuit-tracer loads ours and
we load theirs).

A directory holds, for each layer i of the CLT (i counted from the model's first layer):

    W_enc_{i}.safetensors   W_enc_{i} [F, d_in], b_enc_{i} [F], b_dec_{i} [d_out],
                            threshold_{i} [F] (JumpReLU / BatchTopK: the inference threshold)
    W_dec_{i}.safetensors   W_dec_{i} [F, n_layers - i, d_out]: layer i's decoder to i, i+1, ..
    config.yaml             model_kind: cross_layer_transcoder, model_name,
                            feature_input_hook / feature_output_hook (per-layer suffixes),
                            activation (relu | topk, with k)
    cfg.json                our `SAEConfig` (exact round trip) and the training metadata
    sparsity.safetensors    optional per-latent log10 firing frequency [n_layers * F]

circuit-tracer (0.5.0) infers the activation from the files: a `threshold_{i}` makes it a
JumpReLU, none a ReLU; it has no TopK CLT, so a TopK CLT loads there as a ReLU (not the same
function: train a BatchTopK or JumpReLU CLT to use it in circuit-tracer). Its layers are
numbered from 0, so a CLT meant for circuit-tracer starts at the model's layer 0. Reading a
directory without our cfg.json (one of circuit-tracer's) gives a JumpReLU CLT (a ReLU one with
thresholds at the smallest positive float), or TopK when config.yaml says `activation: topk`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.errors import ConfigError
from interp.io import (atomic_write_bytes, atomic_write_json, load_safetensors, read_json,
                       save_safetensors_atomic)

log = logging.getLogger(__name__)

FORMAT = "circuit-tracer-clt"
CONFIG_YAML = "config.yaml"
CFG_JSON = "cfg.json"
SPARSITY = "sparsity.safetensors"
#: our input hooks and the per-layer suffix circuit-tracer names the same vector by
_CT_SUFFIX = {"ln2.hook_normalized": "mlp.hook_in"}


def is_clt_dir(path: str | Path) -> bool:
    """Whether `path` holds a cross-layer transcoder in this layout."""
    path = Path(path)
    return path.is_dir() and any(path.glob("W_enc_*.safetensors"))


def _suffix(template: str) -> str:
    m = re.fullmatch(r"blocks\.\{layer\}\.(.+)", template)
    if m is None:
        raise ConfigError(f"Hook template {template!r} is not of the form "
                          "'blocks.{layer}.NAME'; circuit-tracer cannot name it.")
    return _CT_SUFFIX.get(m.group(1), m.group(1))


def save_clt(clt, path: str | Path, *, sparsity: Tensor | None = None,
             metadata: dict[str, Any] | None = None) -> Path:
    """Write a `CrossLayerTranscoder` to `path` (every file atomically, cfg.json last)."""
    import yaml

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = clt.cfg
    if cfg.clt_layers[0] != 0:
        log.warning("This CLT starts at layer %d; circuit-tracer numbers a CLT's layers from 0 "
                    "and cannot use it (we can).", cfg.clt_layers[0])
    thr = clt.jump_threshold
    for i, layer in enumerate(cfg.clt_layers):
        enc, b_enc = clt.encoder(i)
        t = {f"W_enc_{layer}": enc, f"b_enc_{layer}": b_enc,
             f"b_dec_{layer}": clt.b_dec_layer(i)}
        if thr is not None:
            t[f"threshold_{layer}"] = thr[i]
        if cfg.clt_activation == "jumprelu":  # the trained parameter itself: exact round trip
            t[f"log_threshold_{layer}"] = clt.log_threshold.view(clt.n_layers, -1)[i]
        save_safetensors_atomic({k: v.detach().cpu().contiguous() for k, v in t.items()},
                                path / f"W_enc_{layer}.safetensors")
        save_safetensors_atomic({f"W_dec_{layer}": clt.decoder(i).detach().cpu().contiguous()},
                                path / f"W_dec_{layer}.safetensors")
    ct = {"model_kind": "cross_layer_transcoder", "model_name": cfg.model_name,
          "feature_input_hook": _suffix(cfg.hook_name),
          "feature_output_hook": _suffix(cfg.hook_name_out)}
    if cfg.clt_activation == "topk":
        ct.update(activation="topk", k=cfg.k)
    atomic_write_bytes(path / CONFIG_YAML, yaml.safe_dump(ct, sort_keys=False).encode())
    if sparsity is not None:
        sparsity = sparsity.detach().float().reshape(-1).cpu().contiguous()
        if sparsity.numel() != cfg.d_sae:
            raise ConfigError(f"sparsity has {sparsity.numel()} entries; expected {cfg.d_sae}.")
        save_safetensors_atomic({"sparsity": sparsity}, path / SPARSITY)
    elif (path / SPARSITY).exists():
        (path / SPARSITY).unlink()
    atomic_write_json(path / CFG_JSON, {"format": FORMAT, "interp_architecture": "clt",
                                        "interp_config": cfg.to_dict(),
                                        "metadata": metadata or {}})
    return path


def load_clt(path: str | Path):
    """A `CrossLayerTranscoder` from a directory in this layout (ours or circuit-tracer's)."""
    from saes.architectures import create_sae
    from saes.base import SAEConfig

    path = Path(path)
    if not is_clt_dir(path):
        raise ConfigError(f"No cross-layer transcoder at {path}: expected W_enc_<layer>."
                          "safetensors and W_dec_<layer>.safetensors files.")
    layers = sorted(int(m.group(1)) for p in path.glob("W_enc_*.safetensors")
                    if (m := re.fullmatch(r"W_enc_(\d+)\.safetensors", p.name)))
    enc = {i: load_safetensors(path / f"W_enc_{i}.safetensors") for i in layers}
    dec = {}
    for i in layers:
        f = path / f"W_dec_{i}.safetensors"
        if not f.is_file():
            raise ConfigError(f"{path} has W_enc_{i}.safetensors but no W_dec_{i}.safetensors.")
        dec[i] = load_safetensors(f)
    for i in layers:
        for name, t in ((f"W_enc_{i}", enc[i]), (f"b_enc_{i}", enc[i]), (f"b_dec_{i}", enc[i]),
                        (f"W_dec_{i}", dec[i])):
            if name not in t:
                raise ConfigError(f"{path}: tensor {name!r} is missing (it has {sorted(t)}).")
    if (path / CFG_JSON).is_file():
        raw = read_json(path / CFG_JSON, expect=dict)
        cfg = SAEConfig.from_dict(raw["interp_config"])
        if list(cfg.clt_layers) != layers:
            raise ConfigError(f"{path}: cfg.json names layers {list(cfg.clt_layers)} but the "
                              f"files hold {layers}.")
    else:
        cfg = _config_from_files(path, layers, enc)
    clt = create_sae(cfg)
    n, f, d_in, d_out = clt.n_layers, clt.n_latents, clt.d_in, clt.d_out
    with torch.no_grad():
        for i, layer in enumerate(layers):
            shapes = {f"W_enc_{layer}": (f, d_in), f"b_enc_{layer}": (f,),
                      f"b_dec_{layer}": (d_out,)}
            for name, shape in shapes.items():
                if tuple(enc[layer][name].shape) != shape:
                    raise ConfigError(f"{path}: {name} has shape {tuple(enc[layer][name].shape)}"
                                      f", expected {shape}.")
            w = dec[layer][f"W_dec_{layer}"]
            if tuple(w.shape) != (f, n - i, d_out):
                raise ConfigError(f"{path}: W_dec_{layer} has shape {tuple(w.shape)}, expected "
                                  f"{(f, n - i, d_out)} (latents, layers it writes to, d).")
            e, b = clt.encoder(i)
            e.copy_(enc[layer][f"W_enc_{layer}"])
            b.copy_(enc[layer][f"b_enc_{layer}"])
            clt.b_dec_layer(i).copy_(enc[layer][f"b_dec_{layer}"])
            clt.decoder(i).copy_(w)
            thr = enc[layer].get(f"threshold_{layer}")
            log_thr = enc[layer].get(f"log_threshold_{layer}")
            if cfg.clt_activation == "jumprelu" and log_thr is not None:
                clt.log_threshold[i * f:(i + 1) * f].copy_(log_thr.reshape(-1))
            elif cfg.clt_activation == "jumprelu":
                if thr is None:
                    raise ConfigError(f"{path}: a JumpReLU CLT needs threshold_{layer}.")
                thr = thr.float().reshape(-1)
                clt.log_threshold[i * f:(i + 1) * f].copy_(
                    thr.clamp_min(torch.finfo(thr.dtype).tiny).log())
            elif cfg.clt_activation == "batchtopk" and thr is not None:
                clt.threshold[i] = thr.reshape(-1)[0]
    return clt.float().eval().requires_grad_(False)


def _config_from_files(path: Path, layers: list[int], enc: dict[int, dict]):
    """Our config for a circuit-tracer CLT directory (no cfg.json)."""
    import yaml

    from saes.base import SAEConfig

    yml = {}
    if (path / CONFIG_YAML).is_file():
        try:
            yml = yaml.safe_load((path / CONFIG_YAML).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path / CONFIG_YAML} is not a readable YAML file ({e}).") \
                from None
        if not isinstance(yml, dict):
            raise ConfigError(f"{path / CONFIG_YAML} does not hold a mapping of settings.")
    first = enc[layers[0]]
    f, d_in = first[f"W_enc_{layers[0]}"].shape
    d_out = first[f"b_dec_{layers[0]}"].shape[0]
    has_thr = f"threshold_{layers[0]}" in first
    if has_thr:
        act, k = "jumprelu", {}
    elif yml.get("activation") == "topk":
        if "k" not in yml:
            raise ConfigError(f"{path}: a TopK CLT needs k; give `k:` in config.yaml.")
        act, k = "topk", {"k": int(yml["k"])}
    else:  # ReLU: a JumpReLU with thresholds at the smallest positive float
        for i in layers:
            enc[i][f"threshold_{i}"] = torch.zeros(f)
        act, k = "jumprelu", {}
    inp = yml.get("feature_input_hook", "mlp.hook_in")
    out = yml.get("feature_output_hook", "hook_mlp_out")
    return SAEConfig(architecture="clt", d_in=int(d_in), d_out=int(d_out),
                     d_sae=int(f) * len(layers), transcoder=True, clt_layers=tuple(layers),
                     clt_activation=act, **k, model_name=str(yml.get("model_name", "")),
                     hook_name=f"blocks.{{layer}}.{inp}", hook_name_out=f"blocks.{{layer}}.{out}")
