"""Sparse recovery of codes over a dictionary, to check uniqueness / exact l1 recovery empirically.

Under mu < 1/(2K - 1), both basis pursuit (min ||delta||_1 s.t. m = D^T delta; Chen, Donoho &
Saunders 1998) and orthogonal matching pursuit (Pati et al. 1993; Tropp 2004) recover the unique
K-sparse code (Donoho & Elad 2003), as invoked by Hu et al. (arXiv 2509.20784). Both run in the
whitened space of the metric S (the AIP), where the dictionary rows have unit norm.
Dictionaries are rows D [N, H]; everything is float64.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError
from saes.atoms.coherence import normalise_rows


def _whitened(D: Tensor, S: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(unit rows in whitened space, their scales, whitened x)."""
    D, x = D.double(), x.double()
    if S is not None:
        from saes.atoms.aip import metric_roots

        half, _ = metric_roots(S)
        D, x = D @ half, x @ half
    scale = D.norm(dim=1)
    return normalise_rows(D), scale, x


def omp(D: Float[Tensor, "N H"], x: Float[Tensor, "n H"], k: int, S: Tensor | None = None,
        tol: float = 1e-10) -> Float[Tensor, "n N"]:
    """Orthogonal matching pursuit: up to k greedy atoms per sample, stopping when the
    residual's norm falls below tol * ||x||; codes in the units of the rows of D."""
    W, scale, xw = _whitened(D, S, x)
    codes = torch.zeros(x.shape[0], D.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        r, idx = xw[i].clone(), []
        target = tol * float(xw[i].norm())
        coef = torch.zeros(0, dtype=torch.float64)
        for _ in range(min(k, W.shape[1])):
            if float(r.norm()) <= target:
                break
            j = int((W @ r).abs().argmax())
            if j in idx:
                break
            idx.append(j)
            A = W[idx].T
            coef = torch.linalg.lstsq(A, xw[i].unsqueeze(1)).solution.squeeze(1)
            r = xw[i] - A @ coef
        if idx:
            codes[i, idx] = coef / scale[idx]
    return codes


def basis_pursuit(D: Float[Tensor, "N H"], x: Float[Tensor, "n H"], S: Tensor | None = None,
                  nonneg: bool = True) -> Float[Tensor, "n N"]:
    """min ||delta||_1 s.t. x = D^T delta (delta >= 0 if `nonneg`, the SAE case), one linear
    program per sample (scipy's HiGHS); codes in the units of the rows of D."""
    from scipy.optimize import linprog

    W, scale, xw = _whitened(D, S, x)
    A = W.T.numpy()  # [H, N]
    N = A.shape[1]
    if not nonneg:
        A = np.hstack([A, -A])
    codes = torch.zeros(x.shape[0], N, dtype=torch.float64)
    for i in range(x.shape[0]):
        res = linprog(np.ones(A.shape[1]), A_eq=A, b_eq=xw[i].numpy(), bounds=(0, None),
                      method="highs")
        if res.status != 0:
            raise ConfigError(f"Basis pursuit failed on sample {i}: {res.message}")
        z = res.x[:N] - (res.x[N:] if not nonneg else 0)
        codes[i] = torch.from_numpy(np.asarray(z, dtype=np.float64)) / scale
    return codes


def recovery_rate(true_codes: Tensor, found: Tensor, rtol: float = 1e-6, zero: float = 1e-9
                  ) -> dict[str, float]:
    """Share of samples whose support is recovered, and whose code is recovered to `rtol`
    (relative l2), plus the median relative error."""
    t, f = true_codes.double(), found.double()
    support = ((t.abs() > zero) == (f.abs() > zero * t.abs().max().clamp_min(1))).all(1)
    rel = (t - f).norm(dim=1) / t.norm(dim=1).clamp_min(1e-300)
    return {"support": float(support.double().mean()),
            "exact": float((rel < rtol).double().mean()),
            "median_rel_error": float(rel.median())}
