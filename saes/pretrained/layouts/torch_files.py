"""Releases that ship as torch pickles of a plain state dict, read with
`torch.load(weights_only=True)` (tensors only; nothing else is unpickled):

- `qwen_scope`: `layer{N}.sae.pt` with `W_enc` [d_sae, d_in], `W_dec` [d_in, d_sae], `b_enc`,
  `b_dec`; TopK with k from the repo name (`...-L0_{k}`), at `blocks.N.hook_resid_post`.
- `goodfire`: `encoder_linear.*`, `decoder_linear.*` (ReLU), at the id's layer resid_post.
- `deepseek_r1`: `encoder.*`, `decoder.*` (ReLU), at the path's `l{N}` resid_post.
- `connor_rob_hook_z`: SAELens-named tensors and a `<name>_cfg.json` (`act_size`,
  `dict_size`, `act_name`), an SAE on the concatenated attention heads (`attn.hook_z`).

All but the last read x, not x - b_dec (folded exactly into ours).
"""

from __future__ import annotations

import re
from pathlib import Path

from interp.errors import ConfigError
from interp.io import read_json
from saes.base import SparseDictionary
from saes.pretrained.files import Need
from saes.pretrained.hooks import canonical_hook
from saes.pretrained.layouts.base import Layout, assemble, layer_of, pick, read_pickled_state
from saes.pretrained.registry import Entry


def _file(e: Entry) -> list[Need]:
    return [Need.of(e.path)]


def _resid(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _qwen_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    raw = read_pickled_state(paths[0])
    m = re.search(r"L0_(\d+)", e.repo_id)
    if m is None:
        raise ConfigError(f"Cannot read k from the repo name {e.repo_id!r} (Qwen Scope repos end "
                          "in -L0_{k}).")
    tensors = {"W_enc": pick(raw, paths[0], "W_enc").T, "W_dec": pick(raw, paths[0], "W_dec").T,
               "b_enc": pick(raw, paths[0], "b_enc"), "b_dec": pick(raw, paths[0], "b_dec")}
    return assemble("topk", tensors, paths[0], k=int(m.group(1)), apply_b_dec_to_input=False,
                    hook_name=_resid(layer_of(e.path, pattern=r"layer(\d+)")), model_name=e.model)


def _linear_pair(raw: dict, path: Path, enc: str, dec: str) -> dict:
    return {"W_enc": pick(raw, path, f"{enc}.weight").T, "b_enc": pick(raw, path, f"{enc}.bias"),
            "W_dec": pick(raw, path, f"{dec}.weight").T, "b_dec": pick(raw, path, f"{dec}.bias")}


def _goodfire_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    tensors = _linear_pair(read_pickled_state(paths[0]), paths[0], "encoder_linear",
                           "decoder_linear")
    return assemble("standard", tensors, paths[0], apply_b_dec_to_input=False,
                    hook_name=_resid(layer_of(e.sae_id, e.path)), model_name=e.model)


def _deepseek_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    tensors = _linear_pair(read_pickled_state(paths[0]), paths[0], "encoder", "decoder")
    layer = layer_of(e.path, pattern=r"-l(\d+)")
    return assemble("standard", tensors, paths[0], apply_b_dec_to_input=False,
                    hook_name=_resid(layer), model_name=e.model)


def _hook_z_cfg(e: Entry) -> str:
    return e.path.split(".pt")[0] + "_cfg.json"


def _hook_z_needs(e: Entry) -> list[Need]:
    return [Need.of(e.path), Need.of(_hook_z_cfg(e))]


def _hook_z_read(e: Entry, paths: list[Path | None]) -> SparseDictionary:
    cfg = read_json(paths[1])
    raw = read_pickled_state(paths[0])
    tensors = {n: pick(raw, paths[0], n) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    hook = canonical_hook(str(cfg.get("act_name", "")))
    if not hook:
        raise ConfigError(f"{paths[1]} has no act_name (the hook the SAE reads).")
    return assemble("standard", tensors, paths[0], hook_name=hook, model_name=e.model)


LAYOUTS = {
    "qwen_scope": Layout(_file, _qwen_read, "Qwen Scope: layer{N}.sae.pt (TopK SAE)"),
    "goodfire": Layout(_file, _goodfire_read, "Goodfire: one .pt/.pth state dict (ReLU SAE)"),
    "deepseek_r1": Layout(_file, _deepseek_read, "one .pt state dict (ReLU SAE)"),
    "connor_rob_hook_z": Layout(_hook_z_needs, _hook_z_read, ".pt state dict + _cfg.json "
                                "(ReLU SAE on attn.hook_z)"),
}
