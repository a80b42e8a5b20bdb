"""Releases already in a dictionary format we read: SAELens directories (`cfg.json` +
`sae_weights.safetensors` + optional `sparsity.safetensors`, SAELens's default loader) and
saprmarks/dictionary_learning folders (`config.json` + `ae.pt`, SAELens's
`dictionary_learning_1`, used by the SAEBench releases)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from interp.errors import ConfigError
from interp.io import read_json
from saes.base import SparseDictionary
from saes.pretrained.files import Need
from saes.pretrained.hooks import canonical_hook
from saes.pretrained.layouts.base import Layout, fold_norm_scaling
from saes.pretrained.registry import Entry

log = logging.getLogger(__name__)


def _in(e: Entry, name: str) -> str:
    return f"{e.path.rstrip('/')}/{name}" if e.path else name


def _saelens_needs(e: Entry) -> list[Need]:
    return [Need.of(_in(e, "cfg.json")), Need.of(_in(e, "sae_weights.safetensors")),
            Need.of(_in(e, "sparsity.safetensors"), optional=True)]


def _saelens_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    """SAELens's own loader: the release's `config_overrides` are merged into cfg.json, and a
    `norm_scaling_factor` from the registry is folded in when the SAE normalised its inputs."""
    from saes.formats._common import _read_safetensors
    from saes.formats.saelens import build_saelens

    cfg_path, weights_path = paths[0], paths[1]
    raw = read_json(cfg_path)
    overrides = {k: v for k, v in e.config_overrides.items()
                 if k not in ("model_from_pretrained_kwargs",)}
    if overrides:
        meta = dict(raw.get("metadata") or {})
        for key in ("model_name", "hook_name", "dataset_path"):
            if key in overrides:
                meta[key] = overrides[key]
        raw = {**raw, **overrides, "metadata": meta}
    tensors = _read_safetensors(weights_path)
    if raw.get("normalize_activations") == "expected_average_only_in":
        if e.norm_scaling_factor is not None:
            tensors = fold_norm_scaling(tensors, e.norm_scaling_factor)
            raw = {**raw, "normalize_activations": "none"}
        else:
            log.warning("%s normalised its inputs during training but the registry gives no "
                        "norm_scaling_factor for it; loading the weights as they are (as "
                        "SAELens does).", e.describe())
    sae = build_saelens(raw, tensors, cfg_path, weights_path)
    return _with_names(sae, e)


def _with_names(sae: SparseDictionary, e: Entry) -> SparseDictionary:
    """Our hook names; the registry's model name where the files name none."""
    cfg = sae.cfg
    sae.cfg = dataclasses.replace(
        cfg, hook_name=canonical_hook(cfg.hook_name),
        hook_name_out=canonical_hook(cfg.hook_name_out), model_name=cfg.model_name or e.model)
    return sae


def _dl_needs(e: Entry) -> list[Need]:
    return [Need.of(_in(e, "config.json")), Need.of(_in(e, "ae.safetensors"), _in(e, "ae.pt"))]


def _dl_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    """A dictionary_learning folder; SAELens reads its hook as the trainer layer's
    `hook_resid_post`, and so do we when the config names no submodule."""
    from saes.formats.dictionary_learning import load_dictionary_learning

    cfg_path, weights = paths
    if cfg_path.parent != weights.parent:  # a local dir may hold them apart: read from one
        raise ConfigError(f"{cfg_path} and {weights} must be in the same folder.")
    sae = load_dictionary_learning(cfg_path.parent)
    if not sae.cfg.hook_name:
        layer = (read_json(cfg_path).get("trainer") or {}).get("layer")
        if isinstance(layer, int):
            sae.cfg = dataclasses.replace(sae.cfg, hook_name=f"blocks.{layer}.hook_resid_post")
    return _with_names(sae, e)


LAYOUTS = {
    "sae_lens": Layout(_saelens_needs, _saelens_read, "SAELens directory: cfg.json + "
                       "sae_weights.safetensors (+ sparsity.safetensors)", sparsity=2),
    "dictionary_learning_1": Layout(_dl_needs, _dl_read, "dictionary_learning: config.json + "
                                    "ae.pt (read with torch.load(weights_only=True))"),
}
