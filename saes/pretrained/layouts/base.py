"""What every layout shares: the `Layout` record, building one of our dictionaries from
SAELens-named tensors, and the small readers (npz without pickle, safetensors, layer numbers).

Tensors are passed in SAELens's names and shapes: `W_enc` [d_in, d_sae], `b_enc` [d_sae],
`W_dec` [d_sae, d_out], `b_dec` [d_out], optional `threshold` [d_sae] and `W_skip`
[d_out, d_in]. An SAE whose encoder reads x rather than x - b_dec
(`apply_b_dec_to_input=False`, e.g. Gemma Scope) is folded exactly into ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from interp.errors import ConfigError
from saes.base import SparseDictionary
from saes.pretrained.files import Need
from saes.pretrained.registry import Entry


@dataclass(frozen=True)
class Layout:
    """How one kind of release is stored: the files an entry needs, and how to read them."""

    needs: Callable[[Entry], list[Need]]
    read: Callable[[Entry, list[Path | None]], SparseDictionary]
    about: str = ""
    sparsity: int | None = None  # index in `needs` of a SAELens sparsity.safetensors, if any


def assemble(arch: str, tensors: dict[str, Tensor], source: Path | str, *, hook_name: str,
             model_name: str, hook_name_out: str = "", transcoder: bool = False,
             apply_b_dec_to_input: bool = True, k: int | None = None) -> SparseDictionary:
    """One of our dictionaries (float32, eval mode) from SAELens-named tensors."""
    from saes.architectures import architecture_class
    from saes.base import SAEConfig
    from saes.formats._common import _assign_saelens

    if "W_enc" not in tensors or "W_dec" not in tensors:
        raise ConfigError(f"{source}: W_enc and W_dec are needed (found {sorted(tensors)}).")
    d_in, d_sae = tensors["W_enc"].shape
    d_out = tensors["W_dec"].shape[-1]
    if transcoder and apply_b_dec_to_input:
        raise ConfigError(f"{source}: a transcoder's encoder cannot subtract b_dec (it lives in "
                          "the output space).")
    extra = {"k": int(k)} if k is not None else {}
    cfg = SAEConfig(architecture=arch, d_in=int(d_in), d_sae=int(d_sae),
                    d_out=int(d_out) if transcoder else None, transcoder=transcoder,
                    skip="W_skip" in tensors, hook_name=hook_name,
                    hook_name_out=hook_name_out if transcoder else "", model_name=model_name,
                    dtype="float32", **extra)
    sae = architecture_class(arch)(cfg)
    _assign_saelens(sae, {n: t.float() for n, t in tensors.items()}, Path(source), arch,
                    fold_input_bias=not transcoder and not apply_b_dec_to_input)
    return sae.eval()


def fold_norm_scaling(tensors: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """Fold an input normalisation x -> scale * x into the weights, as SAELens does for
    `normalize_activations: expected_average_only_in`: W_enc * s, W_dec / s, b_dec / s (the
    latents are unchanged; the output is in the raw units), in float32 as the weights are
    used (one rounding per weight)."""
    out = dict(tensors)
    out["W_enc"] = tensors["W_enc"].float() * scale
    out["W_dec"] = tensors["W_dec"].float() / scale
    out["b_dec"] = tensors["b_dec"].float() / scale
    return out


def read_npz(path: Path) -> dict[str, Tensor]:
    """Arrays of an .npz file (numpy refuses pickled objects here: allow_pickle is off)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable .npz file of arrays ({e}).") from None


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from saes.formats._common import _read_safetensors

    return _read_safetensors(path)


def read_pickled_state(path: Path) -> dict[str, Tensor]:
    """A state dict of tensors from a torch pickle, read with `torch.load(weights_only=True)`
    (the only way some releases ship; nothing but tensors is unpickled)."""
    from saes.formats.dictionary_learning import _torch_load_weights_only

    return _torch_load_weights_only(path)


def layer_of(*texts: str, pattern: str = r"layer[_s]?(\d+)") -> int:
    """The first layer number found in `texts` (repo paths and ids)."""
    for text in texts:
        m = re.search(pattern, text or "", flags=re.IGNORECASE)
        if m:
            return int(m.group(1))
    raise ConfigError(f"No layer number in {list(texts)}; name the layer in the path "
                      "(e.g. 'layer_12').")


def pick(tensors: dict[str, Tensor], source: Path, *names: str) -> Tensor:
    """The first of `names` present in `tensors` (case-insensitive), or a clear error."""
    lower = {k.lower(): k for k in tensors}
    for n in names:
        if n in tensors:
            return tensors[n]
        if n.lower() in lower:
            return tensors[lower[n.lower()]]
    raise ConfigError(f"{source}: none of the tensors {list(names)} found (it has "
                      f"{sorted(tensors)}).")
