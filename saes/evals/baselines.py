"""Baselines reported beside every trained dictionary.

Interpretability scores of random dictionaries come close to those of trained SAEs (arXiv
2602.14111), and SAEBench compares against the model's own basis, so every report puts the same
metric for these next to the SAE:

- `random`: a top-k dictionary of the same shape (d_in, d_sae) with random unit decoder rows,
  the encoder tied to them, b_dec at the data mean and k set to the trained SAE's mean L0 (so it
  is as sparse as the SAE it stands beside). Nothing about it is learned but the mean.
- `neurons`: the raw basis of the hooked activation (latent i = x_i; identity encoder and
  decoder), SAEBench's identity baseline.
- `pca`: latents are coordinates along the principal components of the data (all d of them),
  centred at the data mean, each component signed so that its largest entry is positive;
  exact reconstruction, dense code.

`neurons` and `pca` reconstruct exactly (FVU 0) and are dense (L0 = d): they are a floor for the
metrics that ask whether single latents carry concepts, not for reconstruction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError, unknown_name_message
from saes.architectures import architecture_class
from saes.base import SAEConfig, SparseDictionary


class LinearBasis(SparseDictionary):
    """A dictionary without a nonlinearity: acts = (x - b_dec) @ W_enc + b_enc (not a trained
    architecture, so not in the registry)."""

    architecture = "linear_basis"

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return self.pre_acts(x)


_SEED_SALT = 0xBA5E


def _as_float(x: Tensor) -> Tensor:
    return x.detach().float()


def random_decoder(cfg: SAEConfig, x: Float[Tensor, "n d_in"], l0: float, seed: int = 0
                   ) -> SparseDictionary:
    """Top-k dictionary of `cfg`'s shape with random unit decoder rows (see module docstring)."""
    if cfg.transcoder:
        raise ConfigError("The random baseline is defined for SAEs (a transcoder's output is "
                          "another hook's value, which a random decoder cannot aim at).")
    k = int(min(cfg.d_sae, max(1, round(l0))))
    rcfg = dataclasses.replace(cfg, architecture="topk", k=k, matryoshka_widths=())
    # a seed stream of its own: trainers initialise from small seeds too, and the baseline must
    # not be the SAE's own initialisation
    sae = architecture_class("topk")(rcfg).initialise(_SEED_SALT + seed)
    with torch.no_grad():
        sae.b_dec.copy_(_as_float(x).mean(0))
    return sae.eval()


def neurons(cfg: SAEConfig, x: Tensor | None = None, l0: float = 0.0, seed: int = 0
            ) -> SparseDictionary:
    """The identity basis: latent i is coordinate i of the activation."""
    d = cfg.d_in
    bcfg = dataclasses.replace(cfg, architecture="topk", d_sae=d, d_out=None, transcoder=False,
                               skip=False, matryoshka_widths=())
    basis = LinearBasis(bcfg)
    with torch.no_grad():
        basis.enc_weight.copy_(torch.eye(d))
        basis.W_dec.copy_(torch.eye(d))
    return basis.eval()


def pca(cfg: SAEConfig, x: Float[Tensor, "n d_in"], l0: float = 0.0, seed: int = 0
        ) -> SparseDictionary:
    """Principal-component coordinates of the data (components as unit decoder rows)."""
    xf = _as_float(x).double()
    mean = xf.mean(0)
    _, _, vh = torch.linalg.svd(xf - mean, full_matrices=False)
    # an SVD fixes each component only up to sign, and LAPACK's choice moves with the row
    # order, the thread count and the memory layout; a PCA latent is signed (positive = fires),
    # so its metrics would too. Canonical sign: each component's largest-magnitude entry > 0
    big = vh.abs().argmax(1, keepdim=True)
    vh = vh * torch.sign(vh.gather(1, big))
    comps = vh.float()  # [min(n, d), d], rows orthonormal
    d = cfg.d_in
    if comps.shape[0] < d:
        raise ConfigError(f"PCA of {x.shape[0]} rows gives {comps.shape[0]} < d={d} components; "
                          "pass at least d rows.")
    bcfg = dataclasses.replace(cfg, architecture="topk", d_sae=d, d_out=None, transcoder=False,
                               skip=False, matryoshka_widths=())
    basis = LinearBasis(bcfg)
    with torch.no_grad():
        basis.enc_weight.copy_(comps)
        basis.W_dec.copy_(comps)
        basis.b_dec.copy_(mean.float())
    return basis.eval()


BASELINES: dict[str, Callable[..., SparseDictionary]] = {
    "random": random_decoder,
    "neurons": neurons,
    "pca": pca,
}


def make_baseline(name: str, cfg: SAEConfig, x: Tensor, l0: float, seed: int = 0
                  ) -> SparseDictionary:
    """Baseline `name` for a dictionary of config `cfg` whose mean L0 is `l0`, fitted on `x`."""
    if name not in BASELINES:
        raise ConfigError(unknown_name_message("baseline", name, BASELINES,
                                               f"Available: {', '.join(BASELINES)}."))
    return BASELINES[name](cfg, x, l0, seed)


@torch.no_grad()
def mean_l0(sae: SparseDictionary, x: Tensor, batch: int = 4096) -> float:
    """Mean number of active latents per row of `x`."""
    dt = next(sae.parameters()).dtype
    total = 0.0
    for i in range(0, x.shape[0], batch):
        total += float((sae.encode(x[i:i + batch].to(dt)) != 0).sum())
    return total / max(1, x.shape[0])
