"""EleutherAI sparsify checkpoints (`cfg.json` + `sae.safetensors`), imported as TopK SAEs or
transcoders with the right (non-)transposes."""

from __future__ import annotations

import re
from pathlib import Path


from interp.errors import ConfigError
from interp.io import read_json
from saes.architectures import architecture_class
from saes.base import SAEConfig, SparseDictionary
from saes.formats._common import (SAELENS_CFG, SPARSIFY_WEIGHTS, _assign_saelens, _check_shapes,
                                  _read_safetensors, reader_boundary)


@reader_boundary
def load_sparsify(path: str | Path) -> SparseDictionary:
    """Import an EleutherAI sparsify SAE/transcoder (`cfg.json` + `sae.safetensors`) as TopK.

    sparsify stores `encoder.weight` [L, d_in], `encoder.bias` [L], `W_dec` [L, d_in] (already
    our layout: no transpose), `b_dec` [d_in] and optionally `W_skip` [d_in, d_in];
    `num_latents: 0` means d_in * expansion_factor. Transcoders (`transcode`) do not subtract
    b_dec before encoding.
    """
    path = Path(path)
    cfg_path = path / SAELENS_CFG
    if not cfg_path.is_file():
        raise ConfigError(f"{path} is not a sparsify directory: {SAELENS_CFG} is missing.")
    raw = read_json(cfg_path, expect=dict)
    if raw.get("activation", "topk") != "topk":
        raise ConfigError(f"{cfg_path}: sparsify activation {raw['activation']!r} is not "
                          "supported; interp imports 'topk' sparse coders only.")
    if raw.get("signed", False):
        raise ConfigError(f"{cfg_path}: signed sparsify coders are not supported.")
    try:
        d_in, k = int(raw["d_in"]), int(raw["k"])
    except KeyError as e:
        raise ConfigError(f"{cfg_path} has no {e.args[0]!r}.") from None
    d_sae = int(raw.get("num_latents") or 0) or d_in * int(raw.get("expansion_factor", 0))
    if d_sae < 1:
        raise ConfigError(f"{cfg_path}: num_latents is 0 and expansion_factor is missing.")
    transcode, skip = bool(raw.get("transcode", False)), bool(raw.get("skip_connection", False))
    weights_path = path / SPARSIFY_WEIGHTS
    st = _read_safetensors(weights_path)
    expected = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
                "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if skip:
        expected["W_skip"] = (d_in, d_in)
    _check_shapes(st, expected, weights_path, f"sparsify cfg (d_in={d_in}, num_latents={d_sae})")
    enc_w, b_enc = st["encoder.weight"], st["encoder.bias"]
    # Our config ties a skip connection to a transcoder (no b_dec subtraction): fold b_dec in.
    as_transcoder = transcode or skip
    if as_transcoder and not transcode:
        b_enc = b_enc.double() - enc_w.double() @ st["b_dec"].double()
    hook_name, model_name = _sparsify_names(path)
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k, transcoder=as_transcoder,
                    skip=skip, dtype=str(enc_w.dtype).removeprefix("torch."),
                    hook_name=hook_name, hook_name_out=hook_name if as_transcoder else "",
                    model_name=model_name)
    tensors = {"W_enc": enc_w.T, "b_enc": b_enc, "W_dec": st["W_dec"], "b_dec": st["b_dec"]}
    if skip:
        tensors["W_skip"] = st["W_skip"]
    sae = architecture_class("topk")(cfg)
    _assign_saelens(sae, tensors, weights_path, "sparsify topk")
    return sae.eval()


def _sparsify_names(path: Path) -> tuple[str, str]:
    """(hook_name, model_name) from a sparsify folder name (`layers.6`) and its parent config."""
    hook = ""
    if path.name == "embed_tokens":
        hook = "hook_embed"
    elif m := re.fullmatch(r"(?:.*\.)?layers[._](\d+)", path.name):
        hook = f"blocks.{m.group(1)}.hook_resid_post"
    parent = path.parent / "config.json"
    model = ""
    if parent.is_file():
        try:
            model = str(read_json(parent, expect=dict).get("model", ""))
        except (OSError, ValueError):
            model = ""
    return hook, model
