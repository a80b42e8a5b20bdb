"""Synthetic atoms with a known AIP coherence, and sparse codes over them (float64).

The paper's small-scale test (docs/features.md, "Synthetic test") asks for random atoms whose
AIP coherence is <= eps. Truly random unit vectors (N = 256 in H = 64) have coherence near 0.5,
for which the theorem's threshold interval
is empty for every K >= 2. So the whitened atoms here are a randomly rotated union of two
orthonormal bases, the identity and the normalised Hadamard matrix (N = 2H, coherence exactly
1/sqrt(H); a tight frame, U^T U = 2 I). A random invertible "representation shift" A maps them to
the observed atoms d_i = A u_i, so Euclidean angles are distorted while the AIP with
S~ = (N/H) (D D^T)^-1 = (A A^T)^-1 gives back the u_i exactly (unit AIP norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.errors import ConfigError


@dataclass
class SyntheticAtoms:
    D: Tensor  # [N, H] observed atoms (rows)
    S: Tensor  # [H, H] the exact AIP metric (N/H) (D D^T)^-1, atoms have unit S-norm
    U: Tensor  # [N, H] whitened atoms (unit Euclidean norm)
    eps: float  # AIP coherence, 1/sqrt(H)


def hadamard(H: int) -> Tensor:
    if H < 1 or H & (H - 1):
        raise ConfigError(f"H must be a power of two for the Hadamard construction, got {H}.")
    M = torch.ones(1, 1, dtype=torch.float64)
    while M.shape[0] < H:
        M = torch.cat([torch.cat([M, M], 1), torch.cat([M, -M], 1)], 0)
    return M


def synthetic_atoms(H: int = 64, seed: int = 0, shift: float = 1.0) -> SyntheticAtoms:
    """2H atoms in R^H with AIP coherence 1/sqrt(H) under a random representation shift
    A = I + shift * (random Gaussian) / sqrt(H), plus a common offset direction."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(H, H, generator=g, dtype=torch.float64))
    U = torch.cat([torch.eye(H, dtype=torch.float64), hadamard(H) / math.sqrt(H)]) @ Q.T
    A = torch.eye(H, dtype=torch.float64) + shift * torch.randn(
        H, H, generator=g, dtype=torch.float64) / math.sqrt(H)
    v = torch.randn(H, 1, generator=g, dtype=torch.float64)
    A = A + 2 * shift * v @ v.T / H  # pulls everything towards one direction
    D = U @ A.T
    N = D.shape[0]
    S = (N / H) * torch.linalg.inv(D.T @ D)
    return SyntheticAtoms(D=D, S=S, U=U, eps=1 / math.sqrt(H))


def k_sparse_codes(n: int, N: int, K: int, delta_min: float, delta_max: float, seed: int = 0
                   ) -> Tensor:
    """[n, N] codes with exactly K non-zeros per row, uniform in [delta_min, delta_max]."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.zeros(n, N, dtype=torch.float64)
    support = torch.rand(n, N, generator=g).argsort(1)[:, :K]
    vals = delta_min + (delta_max - delta_min) * torch.rand(n, K, generator=g, dtype=torch.float64)
    codes.scatter_(1, support, vals)
    return codes


def bernoulli_codes(n: int, N: int, p: float, delta_min: float, delta_max: float, seed: int = 0
                    ) -> Tensor:
    """[n, N] codes with independent coordinates: active with probability p, uniform value;
    their covariance is a multiple of I (the estimator's premise after centring)."""
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(n, N, generator=g) < p
    vals = delta_min + (delta_max - delta_min) * torch.rand(n, N, generator=g, dtype=torch.float64)
    return vals * active
