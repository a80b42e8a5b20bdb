"""SAELens format: write what `sae_lens.SAE.load_from_disk` loads, read SAELens directories.

A directory holds `cfg.json`, `sae_weights.safetensors` (exact, strict tensor names) and an
optional `sparsity.safetensors` (docs/saes.md, "Formats"). We record our
exact training config under `metadata.interp_config`, so `load_saelens` restores the same
architecture (e.g. BatchTopK, which SAELens sees as a JumpReLU).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.errors import BadFormat, ConfigError, ModelLoadError, unknown_name_message
from interp.io import atomic_write_json, read_json, save_safetensors_atomic
from saes.architectures import architecture_class
from saes.base import SAEConfig, SparseDictionary
from saes.formats._common import (SAELENS_ARCHITECTURES, SAELENS_CFG, SAELENS_SPARSITY,
                                  SAELENS_VERSION, SAELENS_WEIGHTS, _assign_saelens,
                                  _check_declared, _dtype_name, _read_safetensors, _shape,
                                  reader_boundary)

log = logging.getLogger(__name__)


def save_saelens(sae: SparseDictionary, path: str | Path, *, sparsity: Tensor | None = None,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write `sae` as a SAELens SAE directory; returns the directory.

    `sparsity` is the per-latent log10 firing frequency [d_sae] (SAELens stores
    log10(freq + 1e-10)); without it a stale `sparsity.safetensors` is removed. `metadata` is
    merged into cfg.json's `metadata` (e.g. context_size, prepend_bos, dataset_path). Every
    file is written atomically; cfg.json last.
    """
    path = Path(path)
    cfg = sae.cfg
    try:
        architecture = sae.saelens_architecture()
    except NotImplementedError as e:
        raise ConfigError(f"Cannot save a {sae.architecture!r} dictionary in the SAELens "
                          f"format: {e}") from None
    tensors = sae.saelens_tensors()
    dtype = str(tensors["W_dec"].dtype).removeprefix("torch.")
    interp_cfg = {**cfg.to_dict(), "dtype": dtype}
    meta: dict[str, Any] = {"sae_lens_version": SAELENS_VERSION, "model_name": cfg.model_name,
                            "hook_name": cfg.hook_name, "training_architecture": sae.architecture}
    if cfg.transcoder:
        meta["hook_name_out"] = cfg.hook_name_out or cfg.hook_name
    meta.update(metadata or {})
    meta.update({"interp_architecture": sae.architecture, "interp_config": interp_cfg})
    out_cfg: dict[str, Any] = {
        "architecture": architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": dtype,
        "device": "cpu", "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none", "reshape_activations": "none",
    }
    if cfg.transcoder:
        out_cfg["d_out"] = cfg.out_dim
    out_cfg.update(sae.saelens_extra_cfg())
    out_cfg["metadata"] = meta

    path.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(tensors, path / SAELENS_WEIGHTS)
    if sparsity is not None:
        sparsity = sparsity.detach().float().reshape(-1).cpu()
        if sparsity.numel() != cfg.d_sae:
            raise ConfigError(f"sparsity has {sparsity.numel()} entries; expected d_sae={cfg.d_sae}.")
        if bool((sparsity > 1e-4).any()):  # log10(freq + 1e-10) is <= ~4e-11
            raise ConfigError("sparsity must be the log10 firing frequency (<= 0), as SAELens "
                              "stores it; pass torch.log10(freq + 1e-10).")
        save_safetensors_atomic({"sparsity": sparsity.contiguous()}, path / SAELENS_SPARSITY)
    elif (path / SAELENS_SPARSITY).exists():
        (path / SAELENS_SPARSITY).unlink()
    atomic_write_json(path / SAELENS_CFG, out_cfg)
    return path


@reader_boundary
def load_saelens(path: str | Path) -> SparseDictionary:
    """Load a SAELens SAE directory (ours or written by SAELens) as one of our dictionaries.

    Directories we wrote restore the exact training architecture from
    `metadata.interp_config`; others map SAELens's architecture to ours (see
    `SAELENS_ARCHITECTURES`). Encoder-input conventions we do not share are folded into the
    weights exactly: `apply_b_dec_to_input: false` on an SAE moves b_dec into b_enc, and TopK's
    `rescale_acts_by_decoder_norm` moves the decoder norms into the encoder.
    """
    path = Path(path)
    cfg_path = path / SAELENS_CFG
    if not cfg_path.is_file():
        raise ConfigError(f"{path} is not a SAELens SAE directory: {SAELENS_CFG} is missing.")
    weights_path = path / SAELENS_WEIGHTS
    return build_saelens(read_json(cfg_path, expect=dict), _read_safetensors(weights_path),
                         cfg_path, weights_path)


def build_saelens(raw: dict, tensors: dict[str, Tensor], cfg_path: Path | str = SAELENS_CFG,
                  weights_path: Path | str = SAELENS_WEIGHTS) -> SparseDictionary:
    """One of our dictionaries from a SAELens config dict and its SAELens-named tensors (what
    `load_saelens` reads from disk; converters of other layouts produce the same pair).
    `cfg_path` and `weights_path` name the sources in error messages."""
    cfg_path, weights_path = Path(cfg_path), Path(weights_path)
    tensors = dict(tensors)
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadFormat(f"{cfg_path}: 'metadata' is a {type(metadata).__name__}, not an object.")
    if "interp_config" in metadata:
        try:
            if not isinstance(metadata["interp_config"], dict):
                raise ConfigError("it is not an object")
            cfg = SAEConfig.from_dict(metadata["interp_config"])
            _check_declared(tensors, cfg.d_in, cfg.d_sae, cfg.out_dim, weights_path, cfg_path)
            sae = architecture_class(cfg.architecture)(cfg)
        except (ConfigError, TypeError, ValueError) as e:  # another interp version wrote it, or
            # a hand edit broke it: read it as SAELens does
            log.warning("%s: metadata.interp_config is not usable here (%s); loading by its "
                        "SAELens architecture instead.", cfg_path, e)
        else:
            _assign_saelens(sae, tensors, weights_path, raw.get("architecture", cfg.architecture))
            return sae.eval()

    raw = _legacy_saelens_cfg(raw)
    metadata = raw.get("metadata") or {}
    arch = raw.get("architecture", "standard")
    if arch not in SAELENS_ARCHITECTURES:
        hint = (f"interp reads the SAELens architectures {', '.join(sorted(SAELENS_ARCHITECTURES))}.")
        if arch in ("batchtopk", "matryoshka_batchtopk"):
            hint += (" This looks like a SAELens training checkpoint; export it with "
                     "TrainingSAE.save_inference_model (it becomes a 'jumprelu').")
        raise ConfigError(f"{cfg_path}: " + unknown_name_message(
            "SAELens architecture", arch, SAELENS_ARCHITECTURES, hint=hint))
    ours, transcoder, skip = SAELENS_ARCHITECTURES[arch]
    for key in ("d_in", "d_sae"):
        if key not in raw:
            raise ConfigError(f"{cfg_path} has no {key!r}; a SAELens cfg.json needs d_in and d_sae.")
    norm = raw.get("normalize_activations", "none") or "none"
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ConfigError(f"{cfg_path}: normalize_activations={norm!r} normalises inputs at run "
                          "time, which interp dictionaries do not; fold it into the weights "
                          "and save with 'none'.")
    if norm != "none":
        log.warning("%s: normalize_activations=%r is an identity at inference in SAELens; "
                    "loading the weights as they are.", cfg_path, norm)
    apply_b_dec = bool(raw.get("apply_b_dec_to_input", True))
    if transcoder and apply_b_dec:
        raise ConfigError(f"{cfg_path}: a {arch!r} cannot have apply_b_dec_to_input=true "
                          "(b_dec lives in the output space).")
    d_out = None
    if transcoder:
        d_out = int(raw.get("d_out") or _shape(tensors, "W_dec", weights_path)[-1])
    dtype = _dtype_name(raw.get("dtype", "float32"), cfg_path)
    d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    _check_declared(tensors, d_in, d_sae, d_out or d_in, weights_path, cfg_path)
    cfg = SAEConfig(
        architecture=ours, d_in=d_in, d_sae=d_sae, d_out=d_out,
        transcoder=transcoder, skip=skip, k=int(raw.get("k", 100)),
        hook_name=metadata.get("hook_name") or raw.get("hook_name") or "",
        hook_name_out=metadata.get("hook_name_out") or raw.get("hook_name_out") or "",
        model_name=metadata.get("model_name") or raw.get("model_name") or "", dtype=dtype)
    sae = architecture_class(ours)(cfg)
    scaling = tensors.pop("scaling_factor", None)
    if scaling is not None and not torch.allclose(scaling.float(), torch.ones(())):
        raise ConfigError(f"{weights_path}: a legacy 'scaling_factor' tensor that is not all "
                          "ones is not supported; fold it into W_dec first.")
    _assign_saelens(sae, tensors, weights_path, arch,
                    fold_input_bias=not transcoder and not apply_b_dec,
                    rescale_by_decoder_norm=bool(raw.get("rescale_acts_by_decoder_norm", False)))
    return sae.eval()


def _legacy_saelens_cfg(raw: dict) -> dict:
    """Minimal pre-6.0 SAELens config handling (no `sae_lens_version` >= 6): `hook_point` ->
    `hook_name`, architecture defaulting to standard, `activation_fn_str: topk` -> topk."""
    meta = raw.get("metadata") or {}
    version = str(raw.get("sae_lens_version") or meta.get("sae_lens_version") or "")
    major = re.match(r"\d+", version)
    if major and int(major.group()) >= 6:
        return raw
    raw = dict(raw)
    if "hook_point" in raw and "hook_name" not in raw:
        raw["hook_name"] = raw.pop("hook_point")
    if "architecture" not in raw:
        fn = raw.get("activation_fn_str") or raw.get("activation_fn")
        raw["architecture"] = "topk" if fn == "topk" else "standard"
        if fn == "topk":
            raw["k"] = (raw.get("activation_fn_kwargs") or {}).get("k", 100)
    meta = dict(meta)
    for key in ("model_name", "hook_name", "hook_name_out"):
        if raw.get(key):
            meta.setdefault(key, raw[key])
    raw["metadata"] = meta
    return raw


def load_saelens_sparsity(path: str | Path) -> Tensor | None:
    """The [d_sae] log10 firing frequencies of a SAELens directory, or None if absent."""
    p = Path(path) / SAELENS_SPARSITY
    if not p.is_file():
        return None
    t = _read_safetensors(p)
    if "sparsity" not in t:
        raise ConfigError(f"{p} has no tensor 'sparsity' (found {sorted(t)}).")
    return t["sparsity"]


def load_saelens_from_hub(repo_id: str, sae_id: str, *, revision: str | None = None
                          ) -> SparseDictionary:
    """Download `<repo_id>/<sae_id>/` from the Hugging Face Hub and `load_saelens` it."""
    from huggingface_hub import constants, snapshot_download

    try:
        root = snapshot_download(repo_id, allow_patterns=[f"{sae_id}/*"], revision=revision)
    except Exception as e:  # the hub raises many types (offline, 404, auth, network)
        offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true")
        hint = ("HF_HUB_OFFLINE is set and these files are not in the local cache: unset "
                "HF_HUB_OFFLINE (or run once with network) to download them, or download the "
                "folder yourself and call saes.formats.load_saelens(path)." if offline else
                "Check the repo id and SAE id (the SAE's folder inside the repo), your network "
                "and, for gated repos, `huggingface-cli login`; or download the folder yourself "
                "and call saes.formats.load_saelens(path).")
        raise ModelLoadError(f"Could not download SAE {sae_id!r} from Hugging Face repo "
                             f"{repo_id!r} ({type(e).__name__}: {e}). {hint}") from None
    folder = Path(root) / sae_id
    if not (folder / SAELENS_CFG).is_file():
        raise ModelLoadError(f"Hugging Face repo {repo_id!r} has no SAE folder {sae_id!r} with a "
                             f"{SAELENS_CFG}; the SAE id is the folder name inside the repo.")
    return load_saelens(folder)


# ============================================================== sparsify
