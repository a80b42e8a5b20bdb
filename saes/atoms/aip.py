"""The atomic inner product (AIP) and its estimation from activations.

Hu et al., "Towards Atoms of Large Language Models" (arXiv 2509.20784): representations are
identified only up to an invertible linear map, and the Euclidean inner product between
activations is biased ("representation shift": angles centred well below 90 degrees). The
admissible metric for an atom dictionary D = [d_1 ... d_N] (H x N) is S~ = (D D^T)^-1, with

    <u, v>_S~ = u^T S~ v,   ||u||_S~ = sqrt(u^T S~ u),   AIP-cosine = <u, v>_S~ / (||u|| ||v||)_S~

equivalently ordinary cosine after whitening, u~ = S~^{1/2} u. D is unknown, so S~ is estimated
as (E[k k^T] + ridge I)^-1 from activations k (if k = D delta with E[delta delta^T] ~ I then
E[k k^T] ~ D D^T). `center=False` is the paper's literal uncentred second moment; `center=True`
uses the covariance (consistent when the codes have a non-zero mean). The ridge is
`ridge * trace(Sigma) / H` (docs/features.md, "The atomic inner product").
All matrices here are float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError


class SecondMoment:
    """Streaming sum of x and x x^T (float64), for estimating S~ from any number of rows."""

    def __init__(self, d: int):
        self.n = 0
        self.sum = torch.zeros(d, dtype=torch.float64)
        self.outer = torch.zeros(d, d, dtype=torch.float64)

    def update(self, x: Float[Tensor, "n d"]) -> SecondMoment:
        x = x.reshape(-1, self.sum.numel()).double()
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x
        return self

    def matrix(self, center: bool = False) -> Float[Tensor, "d d"]:
        if self.n == 0:
            raise ConfigError("No rows were added: cannot estimate a second moment.")
        m = self.outer / self.n
        if center:
            mu = self.sum / self.n
            m = m - torch.outer(mu, mu)
        return m

    @property
    def mean(self) -> Tensor:
        return self.sum / max(1, self.n)


def estimate_metric(acts: Float[Tensor, "n H"] | SecondMoment, center: bool = False,
                    ridge: float = 1e-4) -> Float[Tensor, "H H"]:
    """S~ = (Sigma + ridge * tr(Sigma)/H * I)^-1 with Sigma = E[k k^T] (or Cov[k] if `center`),
    normalised to trace H (the paper's S~ is defined up to the scale c^2)."""
    mom = acts if isinstance(acts, SecondMoment) else SecondMoment(acts.shape[-1]).update(acts)
    sigma = mom.matrix(center)
    H = sigma.shape[0]
    lam = ridge * float(torch.trace(sigma)) / H
    evals, evecs = torch.linalg.eigh(sigma + lam * torch.eye(H, dtype=sigma.dtype))
    if float(evals.min()) <= 0:
        raise ConfigError("The second moment is singular even with the ridge; raise `ridge` or "
                          "use more (and more varied) activations.")
    S = (evecs / evals) @ evecs.T
    return S * (H / torch.trace(S))


def metric_roots(S: Float[Tensor, "H H"]) -> tuple[Tensor, Tensor]:
    """(S^{1/2}, S^{-1/2}), symmetric, from the eigendecomposition of the SPD metric S."""
    evals, evecs = torch.linalg.eigh(S.double())
    if float(evals.min()) <= 0:
        raise ConfigError("The metric is not positive definite.")
    r = evals.sqrt()
    return (evecs * r) @ evecs.T, (evecs / r) @ evecs.T


def whiten(x: Float[Tensor, "... H"], S_half: Float[Tensor, "H H"]) -> Tensor:
    """x~ = S^{1/2} x (row vectors): the AIP becomes the Euclidean inner product."""
    return x.double() @ S_half


def aip(u: Tensor, v: Tensor, S: Tensor) -> Tensor:
    """<u, v>_S = u^T S v, row-wise over leading dimensions."""
    return ((u.double() @ S) * v.double()).sum(-1)


def aip_norm(u: Tensor, S: Tensor | None = None) -> Tensor:
    """||u||_S (Euclidean when S is None)."""
    return (aip(u, u, S) if S is not None else u.double().pow(2).sum(-1)).clamp_min(0).sqrt()


def aip_cosine(u: Tensor, v: Tensor, S: Tensor | None = None) -> Tensor:
    """AIP-cosine <u, v>_S / (||u||_S ||v||_S); the ordinary cosine when S is None."""
    if S is None:
        uv = (u.double() * v.double()).sum(-1)
    else:
        uv = aip(u, v, S)
    return uv / (aip_norm(u, S) * aip_norm(v, S)).clamp_min(1e-300)


def pair_angles(x: Float[Tensor, "n H"], S: Tensor | None = None, n_pairs: int = 20_000,
                seed: int = 0) -> np.ndarray:
    """Angles (degrees) between `n_pairs` random pairs of distinct rows, Euclidean or AIP."""
    if x.shape[0] < 2:
        raise ConfigError("Need at least two activation vectors for pair angles.")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, x.shape[0], (n_pairs,), generator=g)
    j = (i + torch.randint(1, x.shape[0], (n_pairs,), generator=g)) % x.shape[0]
    cos = aip_cosine(x[i], x[j], S).clamp(-1, 1)
    return np.degrees(np.arccos(cos.numpy()))


def angle_diagnostic(x: Float[Tensor, "n H"], S: Tensor, center: bool = False,
                     n_pairs: int = 20_000, seed: int = 0, bins: int = 90) -> dict:
    """The paper's representation-shift figure: histograms of pairwise Euclidean and AIP angles
    (if `center`, activations are centred first, matching a centred S~). The AIP mean should
    sit near 90 degrees; note the reviewers' caveat that the estimator makes this partly true
    by construction (docs/features.md, "The atomic inner product")."""
    x = x.double()
    if center:
        x = x - x.mean(0)
    eu = pair_angles(x, None, n_pairs, seed)
    ai = pair_angles(x, S, n_pairs, seed)
    edges = np.linspace(0, 180, bins + 1)
    return {"euclid_mean_deg": float(eu.mean()), "aip_mean_deg": float(ai.mean()),
            "euclid_std_deg": float(eu.std()), "aip_std_deg": float(ai.std()),
            "edges_deg": edges.tolist(), "euclid_hist": np.histogram(eu, edges)[0].tolist(),
            "aip_hist": np.histogram(ai, edges)[0].tolist(), "n_pairs": int(n_pairs),
            "center": bool(center)}


def relative_error_up_to_scale(A: Tensor, B: Tensor) -> float:
    """min_c ||c A - B||_F / ||B||_F: how far A is from B up to a positive scale."""
    a, b = A.double().reshape(-1), B.double().reshape(-1)
    c = float(a @ b) / float(a @ a)
    return float((c * a - b).norm() / b.norm()) if math.isfinite(c) else math.inf
