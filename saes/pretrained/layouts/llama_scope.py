"""Llama Scope (arXiv 2410.20526): JumpReLU SAEs on Llama-3.1-8B, and the R1-distill series.

- `llama_scope`: `<path>/hyperparams.json` (`d_model`, `hook_point_in`, a scalar
  `jump_relu_threshold`, `dataset_average_activation_norm.in`) and
  `<path>/checkpoints/final.safetensors` (`encoder.weight` [d_sae, d_in], `decoder.weight`
  [d_in, d_sae], `encoder.bias`, `decoder.bias`). As SAELens reads them: the threshold is
  `jump_relu_threshold * sqrt(d_model) / average_norm_in` for every latent.
- `llama_scope_r1_distill`: `<path>/config.json` (`d_model`, `hook_point_in`) and
  `<path>/sae_weights.safetensors` with the same matrices and `log_jumprelu_threshold`.

Both were trained on inputs scaled to norm sqrt(d_model): the registry's `norm_scaling_factor`
s is folded in (W_enc * s, W_dec / s, b_dec / s). Encoders read x, not x - b_dec.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from interp.errors import ConfigError
from interp.io import read_json
from saes.base import SparseDictionary
from saes.pretrained.files import Need
from saes.pretrained.hooks import canonical_hook
from saes.pretrained.layouts.base import Layout, assemble, fold_norm_scaling, pick, read_safetensors
from saes.pretrained.registry import Entry

log = logging.getLogger(__name__)


def _in(e: Entry, name: str) -> str:
    return f"{e.path.rstrip('/')}/{name}"


def _matrices(raw: dict, path: Path) -> dict:
    return {"W_enc": pick(raw, path, "encoder.weight").T, "W_dec": pick(raw, path,
                                                                        "decoder.weight").T,
            "b_enc": pick(raw, path, "encoder.bias"), "b_dec": pick(raw, path, "decoder.bias")}


def _finish(e: Entry, tensors: dict, source: Path, hook: str) -> SparseDictionary:
    if e.norm_scaling_factor is not None:
        tensors = fold_norm_scaling(tensors, e.norm_scaling_factor)
    else:
        log.warning("%s was trained on normalised inputs but the registry gives no "
                    "norm_scaling_factor; loading the weights as they are (as SAELens does).",
                    e.describe())
    return assemble("jumprelu", tensors, source, hook_name=canonical_hook(hook),
                    model_name=e.model, apply_b_dec_to_input=False)


def _needs(e: Entry) -> list[Need]:
    return [Need.of(_in(e, "hyperparams.json")), Need.of(_in(e, "checkpoints/final.safetensors"))]


def _read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    hp = read_json(paths[0])
    tensors = _matrices(read_safetensors(paths[1]), paths[1])
    d_sae = tensors["W_enc"].shape[1]
    try:
        scale = math.sqrt(hp["d_model"]) / hp["dataset_average_activation_norm"]["in"]
        threshold, hook = float(hp["jump_relu_threshold"]) * scale, hp["hook_point_in"]
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{paths[0]} lacks {err} (a Llama Scope hyperparams.json has d_model, "
                          "hook_point_in, jump_relu_threshold and "
                          "dataset_average_activation_norm.in).") from None
    tensors["threshold"] = torch.full((d_sae,), threshold)
    return _finish(e, tensors, paths[1], hook)


def _r1_needs(e: Entry) -> list[Need]:
    return [Need.of(_in(e, "config.json")), Need.of(_in(e, "sae_weights.safetensors"))]


def _r1_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    hook = read_json(paths[0]).get("hook_point_in")
    if not hook:
        raise ConfigError(f"{paths[0]} has no hook_point_in.")
    raw = read_safetensors(paths[1])
    tensors = _matrices(raw, paths[1])
    tensors["threshold"] = pick(raw, paths[1], "log_jumprelu_threshold").exp()
    return _finish(e, tensors, paths[1], hook)


LAYOUTS = {
    "llama_scope": Layout(_needs, _read, "Llama Scope: hyperparams.json + "
                          "checkpoints/final.safetensors (JumpReLU SAE)"),
    "llama_scope_r1_distill": Layout(_r1_needs, _r1_read, "Llama Scope R1-distill: config.json "
                                     "+ sae_weights.safetensors (JumpReLU SAE)"),
}
