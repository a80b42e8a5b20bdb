"""The threshold-activated SAE (TSAE) of "Towards Atoms of Large Language Models"
(Hu et al., arXiv 2509.20784), built from known atoms or trained as a JumpReLU SAE.

Theorem (the paper's; written up in docs/features.md, "The threshold SAE"). Atoms with unit
AIP norm and coherence <= eps, codes K-sparse with non-zeros in [delta_min, delta_max]. With
W_dec = D, W_enc = D^T S~ (no bias) the
pre-activation of unit k is delta_k + sum_{i != k} delta_i <d_k, d_i>_S~, so for any threshold

    eps K delta_max  <  tau  <  delta_min - eps (K - 1) delta_max

(non-empty iff delta_min > eps (2K - 1) delta_max) sigma_tau(x) = x 1[x >= tau] keeps exactly the
true support. What the proof shows is this support identification; decoding the thresholded
pre-activations directly leaves the interference sum (at most eps (K - 1) delta_max per unit), so
exact reconstruction needs the code on that support, delta_S = G_SS^-1 pre_S with G the AIP Gram
(`refit_codes`). Both are reported separately.

Training (`train_threshold_sae`): the paper trains a JumpReLU SAE (4x over-complete). We whiten the
activations with S~^{1/2} (so the AIP is Euclidean and a unit-norm decoder row has unit AIP norm),
train the repo's JumpReLU SAE with the ordinary trainer on them, and fold the whitening back in,
giving a JumpReLU SAE on raw activations whose decoder rows are the atoms.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError
from saes.architectures import create_sae
from saes.base import SAEConfig


def threshold_interval(eps: float, K: int, delta_min: float, delta_max: float
                       ) -> tuple[float, float]:
    """(lo, hi) = (eps K delta_max, delta_min - eps (K-1) delta_max); empty when lo >= hi."""
    return eps * K * delta_max, delta_min - eps * (K - 1) * delta_max


def threshold_sae(D: Float[Tensor, "N H"], S: Float[Tensor, "H H"], tau: float | Tensor,
                  hook_name: str = "", dtype: str = "float64"):
    """The paper's TSAE as a repo JumpReLU SAE: decoder rows D (unit AIP norm expected),
    encoder D S~ (W_enc = D^T S~ in SAELens layout), no biases, threshold tau."""
    N, H = D.shape
    sae = create_sae(SAEConfig(architecture="jumprelu", d_in=H, d_sae=N, hook_name=hook_name,
                               dtype=dtype))
    dt = getattr(torch, dtype)
    tau = torch.as_tensor(tau, dtype=torch.float64).expand(N)
    if bool((tau <= 0).any()):
        raise ConfigError("The threshold must be positive.")
    with torch.no_grad():
        sae.W_dec.copy_(D.to(dt))
        sae.enc_weight.copy_((D.double() @ S.double()).to(dt))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.log_threshold.copy_(tau.log().to(dt))
    return sae


def pre_activations(sae, x: Tensor) -> Tensor:
    with torch.no_grad():
        return sae.pre_acts(x.to(sae.W_dec.dtype))


def refit_codes(D: Float[Tensor, "N H"], S: Tensor, x: Float[Tensor, "n H"],
                support: Tensor) -> Tensor:
    """The exact code on each sample's identified support: delta_S = argmin ||x - D_S^T
    delta||_S~ = G_SS^-1 D_S S~ x, with G = D S~ D^T (float64). Returns [n, N]."""
    D, S, x = D.double(), S.double(), x.double()
    codes = torch.zeros(x.shape[0], D.shape[0], dtype=torch.float64)
    pre = x @ S @ D.T
    for i in range(x.shape[0]):
        idx = support[i].nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        Ds = D[idx]
        G = Ds @ S @ Ds.T
        codes[i, idx] = torch.linalg.solve(G, pre[i, idx])
    return codes


# --------------------------------------------------------------------------- training
def unwhiten_sae(sae, S_half: Tensor, S_half_inv: Tensor):
    """A dictionary trained on whitened rows x~ = x S^{1/2}, rewritten to act on raw rows x
    with the same codes: enc <- enc S^{1/2}, W_dec <- W_dec S^{-1/2}, b_dec <- b_dec S^{-1/2}."""
    import copy

    out = copy.deepcopy(sae)
    dt = out.W_dec.dtype
    with torch.no_grad():
        out.enc_weight.copy_((sae.enc_weight.double() @ S_half).to(dt))
        out.W_dec.copy_((sae.W_dec.double() @ S_half_inv).to(dt))
        out.b_dec.copy_((sae.b_dec.double() @ S_half_inv).to(dt))
    return out


def train_whitened_sae(x: Float[Tensor, "n H"], S: Tensor | None, run_dir: str | Path,
                       sae: SAEConfig, total_tokens: int, batch_size: int = 1024,
                       lr: float = 4e-3, seed: int = 0, progress: bool = False,
                       device: str = "auto"):
    """Train `sae` with the repo's trainer on rows x (whitened by S~^{1/2} first when S is
    given), reading an in-memory tensor, on `device`; returns the trained dictionary (on the
    host) acting on raw rows."""
    from saes.atoms.aip import metric_roots
    from saes.data import TensorSource
    from saes.train import TrainConfig, Trainer

    if x.shape[0] < batch_size:
        raise ConfigError(f"{x.shape[0]} training rows is fewer than one batch ({batch_size}).")
    if S is not None:
        half, half_inv = metric_roots(S)
        xw = (x.double() @ half).float()
    else:
        xw = x.float()
    cfg = TrainConfig(sae=sae, total_tokens=total_tokens, batch_size=batch_size, lr=lr,
                      seed=seed, checkpoint_every=0, log_every=max(1, total_tokens // batch_size // 20),
                      lr_decay="linear", dead_tokens=max(batch_size * 50, total_tokens // 4),
                      device=device)
    trained = Trainer(cfg, run_dir, TensorSource(xw, shuffle=seed), progress=progress).train()
    if S is None:
        return trained
    return unwhiten_sae(trained, half, half_inv)


def atom_sae_config(H: int, d_sae: int, l0_coefficient: float, hook_name: str = "",
                    init_threshold: float = 2.0) -> SAEConfig:
    """The JumpReLU config used for atoms (L0 penalty through the straight-through step).
    The trainer scales rows to mean norm sqrt(H), so at the tied initialisation a latent's
    pre-activation is roughly standard normal: a threshold of 2 starts about 2 % of latents
    active instead of half of them."""
    return SAEConfig(architecture="jumprelu", d_in=H, d_sae=d_sae, hook_name=hook_name,
                     l0_coefficient=l0_coefficient, jumprelu_sparsity="step",
                     jumprelu_init_threshold=init_threshold, jumprelu_bandwidth=0.05)


def code_scale_bounds(codes: Tensor) -> tuple[float, float]:
    """(delta_min, delta_max) over the non-zero codes (for the theorem's interval)."""
    nz = codes[codes > 0]
    return (float(nz.min()), float(nz.max())) if nz.numel() else (math.nan, math.nan)
