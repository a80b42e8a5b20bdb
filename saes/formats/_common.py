"""Shared by the format readers: constants, safetensors reading, shape checks, assignment."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from interp.errors import ConfigError, unknown_name_message
from saes.base import SparseDictionary

log = logging.getLogger(__name__)

SAELENS_VERSION = "6.54.12"
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_SPARSITY = "sparsity.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"

# SAELens architecture -> (our architecture, transcoder, skip)
SAELENS_ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    "standard": ("standard", False, False),
    "transcoder": ("standard", True, False),
    "skip_transcoder": ("standard", True, True),
    "jumprelu": ("jumprelu", False, False),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
    "topk": ("topk", False, False),
    "gated": ("gated", False, False),
}
_DTYPES = ("float32", "float16", "bfloat16", "float64")

def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path} is missing.")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable safetensors file ({e}).") from None


def _shape(tensors: dict[str, Tensor], name: str, source: Path) -> tuple[int, ...]:
    if name not in tensors:
        raise ConfigError(f"{source}: tensor {name!r} is missing (found {sorted(tensors)}).")
    return tuple(tensors[name].shape)


def _dtype_name(name: str, source: Path) -> str:
    name = str(name).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"{source}: " + unknown_name_message("dtype", name, _DTYPES))
    return name


def _check_shapes(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]],
                  source: Path, described_by: str) -> None:
    """Strict name and shape check; errors name the file and the tensor."""
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ConfigError(f"{source}: tensor(s) {missing} missing; {described_by} needs "
                          f"{sorted(expected)} (found {sorted(tensors)}).")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ConfigError(f"{source}: unexpected tensor(s) {extra} for {described_by} "
                          f"(expected exactly {sorted(expected)}).")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise ConfigError(f"{source}: tensor {name!r} has shape {list(got)}, but "
                              f"{described_by} implies {list(shape)}.")


def _assign_saelens(sae: SparseDictionary, tensors: dict[str, Tensor], source: Path,
                    architecture: str, *, fold_input_bias: bool = False,
                    rescale_by_decoder_norm: bool = False) -> None:
    """Check SAELens-named `tensors` against `sae` and copy them in (the inverse of
    `sae.saelens_tensors()`), then fold foreign input conventions."""
    cfg = sae.cfg
    expected = {k: tuple(v.shape) for k, v in sae.saelens_tensors().items()}
    described = (f"architecture {architecture!r} with d_in={cfg.d_in}, d_sae={cfg.d_sae}"
                 + (f", d_out={cfg.out_dim}" if cfg.transcoder else ""))
    _check_shapes(tensors, expected, source, described)
    dtype = sae.enc_weight.dtype
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    with torch.no_grad():
        loader = getattr(sae, "load_saelens_tensors", None)
        if loader is not None:
            loader(tensors)
        else:
            _default_assign(sae, tensors, source)
        if fold_input_bias:
            _fold_input_bias(sae)
        if rescale_by_decoder_norm:
            n = sae.W_dec.norm(dim=1)
            sae.enc_weight.mul_(n[:, None])
            sae.b_enc.mul_(n)
            sae.W_dec.div_(n[:, None])


def _default_assign(sae: SparseDictionary, tensors: dict[str, Tensor], source: Path) -> None:
    sae.enc_weight.copy_(tensors["W_enc"].T)
    for name in ("b_enc", "W_dec", "b_dec", "W_skip"):
        if name in tensors:
            getattr(sae, name).copy_(tensors[name])
    if "threshold" in tensors:  # the BatchTopK family keeps one scalar threshold
        thr = tensors["threshold"]
        if not torch.equal(thr, thr[:1].expand_as(thr)):
            raise ConfigError(f"{source}: tensor 'threshold' varies across latents, but a "
                              f"{sae.architecture!r} dictionary has one threshold; load it as "
                              "a 'jumprelu' instead.")
        sae.threshold.copy_(thr[0])


@torch.no_grad()
def _fold_input_bias(sae: SparseDictionary) -> None:
    """Make an encoder that reads x (no b_dec subtraction) read x - b_dec instead:
    x W + b = (x - b_dec) W + (b + b_dec W), exactly (computed in float64)."""
    shift = (sae.enc_weight.double() @ sae.b_dec.double())
    sae.b_enc.copy_(sae.b_enc.double() + shift)
    r_mag = getattr(sae, "r_mag", None)
    if r_mag is not None:  # gated: the magnitude path reads x W * exp(r_mag) + b_mag
        sae.b_mag.copy_(sae.b_mag.double() + shift * r_mag.double().exp())
