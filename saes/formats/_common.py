"""Shared by the format readers: constants, safetensors reading, shape checks, assignment."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from torch import Tensor

from interp.errors import (BadFormat, ConfigError, InterpError, MissingFile,
                           unknown_name_message)
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

def reader_boundary(fn):
    """Wrap a format loader `fn(path)`: a value of the wrong type or size deep in a foreign
    config (a string where a width belongs, a list where an object does) becomes a `BadFormat`
    naming the directory, never a bare TypeError/ValueError from inside torch."""

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except InterpError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
                RuntimeError) as e:
            raise BadFormat(f"{path}: the config and weights there do not describe a dictionary "
                            f"interp can load ({type(e).__name__}: {e}); check cfg.json / "
                            "config.json against the weights file.") from e

    return wrapper


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a dictionary's weights file: `BadFormat` if it is missing, `CorruptFile`
    if it is truncated, bit-flipped or declares more data than it holds (checked before any
    allocation)."""
    from interp.io import load_safetensors

    try:
        return load_safetensors(path, "restore the file, or export the dictionary again.")
    except MissingFile as e:
        raise BadFormat(str(e)) from None


def _check_declared(tensors: dict[str, Tensor], d_in: int, d_sae: int, d_out: int,
                    source: Path, cfg_path: Path) -> None:
    """Before a dictionary is built from sizes a config declares, check them against the
    weights actually in the file, so a config claiming 10^12 latents is refused instead of
    allocated."""
    for name, shape in (("W_enc", (d_in, d_sae)), ("W_dec", (d_sae, d_out))):
        if name not in tensors:
            raise BadFormat(f"{source}: tensor {name!r} is missing (found {sorted(tensors)}).")
        got = tuple(tensors[name].shape)
        if got != shape:
            raise BadFormat(f"{source}: tensor {name!r} has shape {list(got)}, but {cfg_path} "
                            f"declares d_in={d_in}, d_sae={d_sae}, d_out={d_out} "
                            f"(so {list(shape)}); the config and the weights do not belong "
                            "together.")


def _shape(tensors: dict[str, Tensor], name: str, source: Path) -> tuple[int, ...]:
    if name not in tensors:
        raise BadFormat(f"{source}: tensor {name!r} is missing (found {sorted(tensors)}).")
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
        raise BadFormat(f"{source}: tensor(s) {missing} missing; {described_by} needs "
                          f"{sorted(expected)} (found {sorted(tensors)}).")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise BadFormat(f"{source}: unexpected tensor(s) {extra} for {described_by} "
                          f"(expected exactly {sorted(expected)}).")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise BadFormat(f"{source}: tensor {name!r} has shape {list(got)}, but "
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
