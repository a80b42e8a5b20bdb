"""Coherence, the RIP bound, uniqueness, stability q* and faithfulness R^2 of a dictionary.

Hu et al., "Towards Atoms of Large Language Models" (arXiv 2509.20784), with the compressed-sensing
facts it invokes (Donoho & Elad 2003; Gershgorin). Dictionaries are given as rows D [N, H]
(one unit per row: SAE decoder rows, identity rows for neurons); every quantity is under a
metric S (the AIP, `saes.atoms.aip`) or Euclidean when S is None. Atoms are normalised to unit
S-norm first.

- coherence mu = max_{i != j} |<d_i, d_j>_S|; per unit mu_j = max_{i != j} |<d_j, d_i>_S|;
- RIP of order K holds when (K - 1) mu < 1 (delta_K <= (K - 1) mu by Gershgorin);
- uniqueness / exact l1 recovery of K-sparse codes when mu < 1 / (2K - 1);
- stability q*, three labelled forms (the paper's v3 name for the v1 uniqueness pass rate):
  `quantile`:   q* = sup{q : mu_q < 1/(2 K_q - 1)}, mu_q and K_q the q-quantiles of the
                per-unit coherence and of the per-sample L0;
  `per_unit`:   the share of units j with mu_j < 1/(2 mean(L0) - 1);
  `per_sample`: the share of samples whose active units all have mu_j < 1/(2 L0_i - 1);
- faithfulness R^2 = 1 - sum ||m - m^||^2 / sum ||m - mean(m)||^2, in the Euclidean or AIP norm.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError

Q_STAR_FORMS = ("quantile", "per_unit", "per_sample")


def normalise_rows(D: Float[Tensor, "N H"], S: Tensor | None = None) -> Tensor:
    """Rows scaled to unit S-norm (Euclidean if S is None), float64."""
    D = D.double()
    sq = ((D @ S) * D).sum(1) if S is not None else D.pow(2).sum(1)
    if bool((sq <= 0).any()):
        raise ConfigError("The dictionary has a zero row: drop dead units before computing "
                          "coherence.")
    return D / sq.sqrt().unsqueeze(1)


def whitened_rows(D: Tensor, S: Tensor | None = None) -> Tensor:
    """Rows mapped to the space where the AIP is Euclidean (d~ = S^{1/2} d), unit norm."""
    if S is None:
        return normalise_rows(D)
    from saes.atoms.aip import metric_roots

    half, _ = metric_roots(S)
    return normalise_rows(D.double() @ half)


def unit_coherence(D: Float[Tensor, "N H"], S: Tensor | None = None, chunk: int = 2048
                   ) -> Float[Tensor, " N"]:
    """mu_j = max_{i != j} |AIP-cosine(d_j, d_i)| for every unit j (chunked Gram rows)."""
    W = whitened_rows(D, S)
    out = torch.empty(W.shape[0], dtype=torch.float64)
    for a in range(0, W.shape[0], chunk):
        g = (W[a:a + chunk] @ W.T).abs()
        idx = torch.arange(a, min(a + chunk, W.shape[0]))
        g[idx - a, idx] = 0.0
        out[a:a + chunk] = g.max(1).values
    return out


def coherence(D: Tensor, S: Tensor | None = None) -> float:
    """mu = max_{i != j} |<d_i, d_j>_S| over unit-norm atoms."""
    return float(unit_coherence(D, S).max())


def rip_bound(mu: float, K: float) -> float:
    """The Gershgorin bound (K - 1) mu on the RIP constant delta_K; RIP holds if it is < 1."""
    return (K - 1) * mu


def uniqueness_bound(K: float) -> float:
    """1 / (2K - 1): coherence below it makes K-sparse codes unique and l1-recoverable."""
    return 1.0 / (2 * K - 1) if K >= 1 else float("inf")


def uniqueness_holds(mu: float, K: float) -> bool:
    return mu < uniqueness_bound(K)


def empirical_rip(D: Tensor, S: Tensor | None, K: int, n_supports: int = 200, seed: int = 0
                  ) -> float:
    """delta_K estimated from random supports: max over supports of the largest deviation of
    the Gram eigenvalues of K unit atoms from 1 (a lower bound on the true delta_K)."""
    W = whitened_rows(D, S)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(n_supports):
        idx = torch.randperm(W.shape[0], generator=g)[:K]
        ev = torch.linalg.eigvalsh(W[idx] @ W[idx].T)
        worst = max(worst, float((ev - 1).abs().max()))
    return worst


def l0_per_sample(codes: Tensor, tol: float = 0.0) -> Tensor:
    """Number of units with |code| > tol in each sample."""
    return (codes.abs() > tol).sum(-1)


def q_star_quantile(mu_j: Tensor, k_i: Tensor, grid: int = 1001) -> float:
    """q* = sup{q in [0, 1] : mu_q < 1 / (2 K_q - 1)} (0 if no q qualifies); the bound is
    infinite for K_q < 1 (an empty code is trivially unique)."""
    qs = np.linspace(0, 1, grid)
    mu_q = np.quantile(np.asarray(mu_j, dtype=float), qs, method="inverted_cdf")
    k_q = np.quantile(np.asarray(k_i, dtype=float), qs, method="inverted_cdf")
    with np.errstate(divide="ignore"):
        bound = np.where(k_q >= 1, 1.0 / (2 * k_q - 1), np.inf)
    ok = mu_q < bound
    return float(qs[ok].max()) if ok.any() else 0.0


def q_star_per_unit(mu_j: Tensor, k_i: Tensor) -> float:
    """The share of units with mu_j < 1 / (2 mean(L0) - 1)."""
    b = uniqueness_bound(float(np.mean(np.asarray(k_i, dtype=float))))
    return float((np.asarray(mu_j) < b).mean())


def q_star_per_sample(mu_j: Tensor, codes: Tensor, tol: float = 0.0) -> float:
    """The share of samples i whose active units j all satisfy mu_j < 1 / (2 L0_i - 1)."""
    active = codes.abs() > tol
    k = active.sum(1).double()
    bound = torch.where(k >= 1, 1.0 / (2 * k - 1), torch.full_like(k, float("inf")))
    worst = torch.where(active, mu_j.double().unsqueeze(0), torch.zeros(())).max(1).values
    return float((worst < bound).double().mean())


def q_star(mu_j: Tensor, codes: Tensor, tol: float = 0.0) -> dict[str, float]:
    """All three labelled forms of q* from the per-unit coherence and the codes [n, N]."""
    k = l0_per_sample(codes, tol)
    return {"quantile": q_star_quantile(mu_j, k), "per_unit": q_star_per_unit(mu_j, k),
            "per_sample": q_star_per_sample(mu_j, codes, tol)}


def faithfulness_r2(m: Float[Tensor, "n H"], m_hat: Float[Tensor, "n H"],
                    S: Tensor | None = None) -> float:
    """R^2 = 1 - sum ||m - m^||^2 / sum ||m - mean(m)||^2, in the S-norm (Euclidean if None)."""
    m, m_hat = m.double(), m_hat.double()
    r, c = m - m_hat, m - m.mean(0)
    if S is not None:
        num, den = ((r @ S) * r).sum(), ((c @ S) * c).sum()
    else:
        num, den = r.pow(2).sum(), c.pow(2).sum()
    return float(1 - num / den.clamp_min(1e-300))
