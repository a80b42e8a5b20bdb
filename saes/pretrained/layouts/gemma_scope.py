"""Gemma Scope (arXiv 2408.05147) and Gemma Scope 2: JumpReLU SAEs and transcoders.

- Gemma Scope 1 (`gemma_2`, `gemma_2_transcoder`): `<path>/params.npz` holding `W_enc`
  [d_in, d_sae], `W_dec` [d_sae, d_out], `b_enc`, `b_dec`, `threshold` (lower-case `w_enc`
  also seen). The hook comes from the repo (`-res` -> resid_post, or the embedding; `-mlp` ->
  hook_mlp_out; `-att` -> attn.hook_z) and the layer from the path; transcoders read the MLP
  input (`ln2.hook_normalized`) and write `hook_mlp_out`. The embedding SAEs were trained on
  embeddings scaled by sqrt(d_model): W_enc / sqrt(d), W_dec * sqrt(d), as SAELens loads them.
- Gemma Scope 2 (`gemma_3`): `<path>/params.safetensors` holding `w_enc` [d_in, d_sae],
  `w_dec` [d_sae, d_out], `b_enc`, `b_dec`, `threshold` and, for affine transcoders,
  `affine_skip_connection` [d_in, d_out]; an optional `<path>/config.json`. The folder names
  the site: resid_post, attn_out (read at attn.hook_z), mlp_out, transcoder (MLP input after
  `pre_feedforward_layernorm` -> MLP output after `post_feedforward_layernorm`).

Encoders read x, not x - b_dec (folded exactly into ours). Widths come from the files.
"""

from __future__ import annotations

import math
from pathlib import Path

from interp.errors import ConfigError
from interp.io import read_json
from saes.base import SparseDictionary
from saes.pretrained.files import Need
from saes.pretrained.layouts.base import (Layout, assemble, layer_of, pick, read_npz,
                                          read_safetensors)
from saes.pretrained.registry import Entry


def _in(e: Entry, name: str) -> str:
    return f"{e.path.rstrip('/')}/{name}"


def npz_tensors(path: Path) -> dict:
    """SAELens-named tensors of a Gemma Scope `params.npz` (either key case)."""
    raw = read_npz(path)
    out = {n: pick(raw, path, n) for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
    scaling = raw.get("scaling_factor")
    if scaling is not None and not bool((scaling == 1).all()):
        raise ConfigError(f"{path}: a 'scaling_factor' that is not all ones is not supported.")
    return out


def _gemma2_hook(e: Entry) -> tuple[str, bool]:
    """(hook, embedding?) of a Gemma Scope 1 SAE, from its repo id and path."""
    repo = e.repo_id.rsplit("/", 1)[-1]
    if "embedding" in e.path:
        return "hook_embed", True
    layer = layer_of(e.path)
    if "-res" in repo:
        return f"blocks.{layer}.hook_resid_post", False
    if "-mlp" in repo:
        return f"blocks.{layer}.hook_mlp_out", False
    if "-att" in repo:
        return f"blocks.{layer}.attn.hook_z", False
    raise ConfigError(f"Cannot tell the hook of {e.describe()}: a Gemma Scope repo name says "
                      "-res, -mlp or -att.")


def _gemma2_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    tensors = npz_tensors(paths[0])
    hook, embedding = _gemma2_hook(e)
    if embedding:
        root = math.sqrt(tensors["W_enc"].shape[0])
        tensors["W_enc"] = tensors["W_enc"] / root
        tensors["W_dec"] = tensors["W_dec"] * root
    return assemble("jumprelu", tensors, paths[0], hook_name=hook, model_name=e.model,
                    apply_b_dec_to_input=False)


def _gemma2_transcoder_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    layer = layer_of(e.path, e.repo_id)
    return transcoder_from_npz(paths[0], layer, e.model)


def transcoder_from_npz(path: Path, layer: int, model: str,
                        hook_in: str = "", hook_out: str = "") -> SparseDictionary:
    """A Gemma Scope 1 transcoder (params.npz) at `layer`."""
    return assemble("jumprelu", npz_tensors(path), path, transcoder=True,
                    apply_b_dec_to_input=False, model_name=model,
                    hook_name=hook_in or f"blocks.{layer}.ln2.hook_normalized",
                    hook_name_out=hook_out or f"blocks.{layer}.hook_mlp_out")


def _gemma3_needs(e: Entry) -> list[Need]:
    if "clt" in e.path:
        raise ConfigError(f"{e.describe()} is a cross-layer transcoder; interp loads per-layer "
                          "dictionaries (use a 'transcoder' release of Gemma Scope 2).")
    return [Need.of(_in(e, "params.safetensors")), Need.of(_in(e, "config.json"), optional=True)]


def _gemma3_site(e: Entry) -> tuple[str, str, bool]:
    """(hook_in, hook_out, transcoder) of a Gemma Scope 2 dictionary, from its folder."""
    layer = layer_of(e.path)
    folder = e.path.lower()
    if "transcoder" in folder:
        return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out", True
    for key, hook in (("resid_post", "hook_resid_post"), ("attn_out", "attn.hook_z"),
                      ("mlp_out", "hook_mlp_out")):
        if key in folder:
            return f"blocks.{layer}.{hook}", "", False
    raise ConfigError(f"Cannot tell the hook of {e.describe()}: a Gemma Scope 2 folder says "
                      "resid_post, attn_out, mlp_out or transcoder.")


def gemma3_tensors(path: Path) -> dict:
    """SAELens-named tensors of a Gemma Scope 2 `params.safetensors`."""
    raw = read_safetensors(path)
    out = {"W_enc": pick(raw, path, "w_enc"), "W_dec": pick(raw, path, "w_dec"),
           "b_enc": pick(raw, path, "b_enc"), "b_dec": pick(raw, path, "b_dec"),
           "threshold": pick(raw, path, "threshold")}
    if "affine_skip_connection" in raw:  # stored [d_in, d_out]; W_skip is [d_out, d_in]
        out["W_skip"] = raw["affine_skip_connection"].T.contiguous()
    return out


def _gemma3_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    cfg = read_json(paths[1]) if paths[1] is not None else {}
    if cfg and cfg.get("architecture") not in (None, "jump_relu"):
        raise ConfigError(f"{paths[1]}: architecture {cfg.get('architecture')!r}; Gemma Scope 2 "
                          "files are 'jump_relu'.")
    hook_in, hook_out, transcoder = _gemma3_site(e)
    tensors = gemma3_tensors(paths[0])
    if "W_skip" in tensors and not transcoder:
        raise ConfigError(f"{paths[0]}: an affine skip connection on an SAE is not supported.")
    return assemble("jumprelu", tensors, paths[0], hook_name=hook_in, hook_name_out=hook_out,
                    transcoder=transcoder, apply_b_dec_to_input=False, model_name=e.model)


def transcoder_from_gemma3(path: Path, layer: int, model: str, hook_in: str = "",
                           hook_out: str = "") -> SparseDictionary:
    """A Gemma Scope 2 transcoder file (params.safetensors) at `layer`."""
    return assemble("jumprelu", gemma3_tensors(path), path, transcoder=True,
                    apply_b_dec_to_input=False, model_name=model,
                    hook_name=hook_in or f"blocks.{layer}.ln2.hook_normalized",
                    hook_name_out=hook_out or f"blocks.{layer}.hook_mlp_out")


def _npz_needs(e: Entry) -> list[Need]:
    return [Need.of(_in(e, "params.npz"))]


LAYOUTS = {
    "gemma_2": Layout(_npz_needs, _gemma2_read, "Gemma Scope: params.npz (JumpReLU SAE)"),
    "gemma_2_transcoder": Layout(_npz_needs, _gemma2_transcoder_read,
                                 "Gemma Scope transcoders: params.npz (JumpReLU transcoder)"),
    "gemma_3": Layout(_gemma3_needs, _gemma3_read, "Gemma Scope 2: params.safetensors "
                      "(+ config.json); JumpReLU SAEs and (affine) transcoders"),
}
