"""Singular value decompositions of a Jacobian given only its products, and the stable rank.

The detached Jacobian of a final-position output is d_model × (pos · d_model) and, as Golden
(arXiv 2505.24293, §3.5) finds, of very low stable rank, so its top singular triplets come from
a randomised range finder (Halko, Martinsson & Tropp 2011, arXiv 0909.4061, Alg. 4.4 / 5.1):
Y = J Ω for a Gaussian Ω with k + p columns, `n_iter` subspace iterations (Y ← J Jᵀ Y, each a
forward and an adjoint product per column), Q = orth(Y), B = Qᵀ J from Jᵀ Q, then the SVD of
the small B. That is (2·n_iter + 2)(k + p) products instead of the d_model a full Jacobian takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Triplets:
    """Top singular triplets: J ≈ U diag(S) Vᵀ; U [d_out, k], S [k], V [k, *input shape]."""

    U: Tensor
    S: Tensor
    V: Tensor
    frobenius_sq: float  # ‖J‖_F² (exact for dense SVDs; captured part + an unbiased estimate of the rest otherwise)
    products: int = 0  # Jacobian-vector products used (0 for a dense SVD)
    # Krylov convergence: (products so far, "left" | "right" projection, top-k Ritz values)
    history: list[tuple[int, str, list[float]]] = field(default_factory=list)

    @property
    def stable_rank(self) -> float:
        """‖J‖_F² / σ_max² (Golden §3.5: the 'dimensionality' of the linear map)."""
        return stable_rank(self.S, self.frobenius_sq)


def stable_rank(S: Tensor, frobenius_sq: float | None = None) -> float:
    fro = float((S.double() ** 2).sum()) if frobenius_sq is None else frobenius_sq
    return fro / float(S[0].double() ** 2) if float(S[0]) > 0 else 0.0


def _orth(a: Tensor) -> Tensor:
    return torch.linalg.qr(a, mode="reduced").Q


def randomized_svd(matvec: Callable[[Tensor], Tensor], rmatvec: Callable[[Tensor], Tensor],
                   in_shape: tuple[int, ...], k: int = 32, oversample: int = 16, n_iter: int = 1,
                   seed: int = 0, dtype: torch.dtype = torch.float64, fro_probes: int = 8
                   ) -> Triplets:
    """Top-`k` singular triplets of the operator J: input [*in_shape] -> output [d_out].

    `matvec(V [b, *in_shape]) -> [b, d_out]` and `rmatvec(U [b, d_out]) -> [b, *in_shape]`
    apply J and Jᵀ to batches. Deterministic for a given `seed`.
    """
    n_in = 1
    for s in in_shape:
        n_in *= s
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(k + oversample + fro_probes, *in_shape, generator=gen,
                        dtype=torch.float64)
    y, probes = matvec(omega.to(dtype)).split([k + oversample, fro_probes])  # [l, d_out]
    l = min(k + oversample, y.shape[-1], n_in)
    q = _orth(y.T)[:, :l]
    for _ in range(n_iter):
        z = rmatvec(q.T).reshape(-1, n_in)
        y = matvec(_orth(z.T).T.reshape(-1, *in_shape))
        q = _orth(y.T)[:, :l]
    b = rmatvec(q.T).reshape(-1, n_in)  # rows: qⱼᵀ J
    ub, s, vh = torch.linalg.svd(b, full_matrices=False)
    fro = float((s.double() ** 2).sum()) + frobenius_outside(probes.double(), q.double())
    products = (k + oversample) * (2 * n_iter + 2) + fro_probes
    return Triplets(U=q @ ub[:, :k], S=s[:k], V=vh[:k].reshape(-1, *in_shape),
                    frobenius_sq=fro, products=products)


def krylov_block(rows_per_vector: int, rows: int = 128, largest: int = 8) -> int:
    """Probe vectors per block Krylov step: the fewest whose batched products still fill
    matrix products of about `rows` rows (`rows_per_vector`: e.g. the prompt's positions).
    Smaller blocks need fewer products for the same accuracy (a Krylov space of higher degree),
    larger ones make each product cheaper; on a CPU the two balance near 128 rows."""
    return max(1, min(largest, rows // max(1, rows_per_vector)))


def block_krylov_svd(matvec: Callable[[Tensor], Tensor], rmatvec: Callable[[Tensor], Tensor],
                     in_shape: tuple[int, ...], k: int = 32, block: int = 8,
                     n_iter: int | None = None, seed: int = 0, dtype: torch.dtype = torch.float64,
                     fro_probes: int = 8, tol: float = 1e-5) -> Triplets:
    """Top-`k` singular triplets from a block Krylov space (Musco & Musco, arXiv 1504.05477).

    Builds Q = orth[JΩ, (JJᵀ)JΩ, (JJᵀ)²JΩ, ...] in output space, `block` columns per step, keeping
    every W_j = Jᵀ Q_j it computes (the rows of B = Qᵀ J) and every Z_j = J W_j: a far better
    subspace per product than subspace iteration when the spectrum decays slowly. Two
    Rayleigh-Ritz projections interleave, as in Golub-Kahan bidiagonalisation: after the adjoint
    products, the singular values of B = Qᵀ J (left space Q); after the forward ones, those of
    J P with P = orth(Wᵀ) the right space, which is J Wᵀ = Z times the inverse square root of the
    Gram matrix W Wᵀ, so no product is spent on it. Each is a lower bound that only grows, and
    σᵢ(Q_jᵀ J) ≤ σᵢ(J P_j) ≤ σᵢ(Q_{j+1}ᵀ J) (the rows of Q_jᵀ J lie in P_j, and Q_{j+1} holds the
    range of J P_j), so every block of products gives a better estimate to test. Block Krylov
    converges geometrically (superlinearly once the space holds the top k), so the error left
    in either sequence after a change δ, with the previous change δ' (one step back in the same
    sequence) and ratio r = δ/δ', is about δ·r/(1−r) (Aitken's estimate, per singular value). It
    stops when that estimate is below `tol` (relative) for every one of the top k in either
    sequence, after `n_iter` steps (None: no limit), or when the space fills the output space.
    `fro_probes` extra Gaussian probes (in the first batch, outside the Krylov space) give an
    unbiased estimate of the Frobenius norm J leaves outside the space, for the stable rank.
    """
    n_in = 1
    for s in in_shape:
        n_in *= s
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(block + fro_probes, *in_shape, generator=gen, dtype=torch.float64)
    first, probes = matvec(omega.to(dtype)).split([block, fro_probes])  # [., d_out]
    d_out = first.shape[-1]
    qs, ws, zs = [_orth(first.T.double())], [], []  # bases in float64
    gram = torch.zeros(0, 0, dtype=torch.float64)  # W Wᵀ = B Bᵀ of the rows so far
    left_rule, right_rule = _Aitken(k, tol), _Aitken(k, tol)  # one per projection
    step, right, history = 0, None, []

    def products() -> int:  # the first batch, every forward and every adjoint block
        return block * (1 + len(zs) + len(ws)) + fro_probes

    while True:
        w = rmatvec(qs[-1].T.to(dtype)).reshape(-1, n_in).double()
        cross = torch.cat([w @ old.T for old in ws] + [w @ w.T], 1)  # [block, m]
        m = gram.shape[0]
        gram = torch.cat([torch.cat([gram, cross[:, :m].T], 1), cross], 0)
        ws.append(w)
        dim = sum(q.shape[1] for q in qs)
        ritz = torch.linalg.eigvalsh(gram).flip(0)[:k].clamp_min(0).sqrt()
        history.append((products(), "left", ritz.tolist()))
        if left_rule.converged(ritz):
            break
        if (n_iter is not None and step >= n_iter) or dim >= d_out:
            break
        z = matvec(w.to(dtype).reshape(-1, *in_shape)).T.double()  # [d_out, block]
        zs.append(z)
        right = right_ritz(torch.cat(zs, 1), gram)
        history.append((products(), "right", right[1][:k].tolist()))
        if right_rule.converged(right[1][:k]):
            break
        right = None
        basis = torch.cat(qs, 1)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            z = z - basis @ (basis.T @ z)
        qs.append(_orth(z)[:, : d_out - dim])
        step += 1
    q = torch.cat(qs, 1)  # every block of Q has its rows of B
    b = torch.cat(ws, 0)  # rows qⱼᵀ J
    if right is not None:  # J P = U S Vᵣᵀ: left vectors U, right vectors P Vᵣ = Wᵀ C Vᵣ
        u, s, coef = right
        v = (b.T @ coef[:, :k]).T
    else:
        ub, s, v = torch.linalg.svd(b, full_matrices=False)
        u = q @ ub
    fro = float(gram.diagonal().sum()) + frobenius_outside(probes.double(), q)  # ‖QᵀJ‖² exact
    k = min(k, s.shape[0])
    return Triplets(U=u[:, :k].to(dtype), S=s[:k].to(dtype),
                    V=v[:k].reshape(-1, *in_shape).to(dtype), frobenius_sq=fro,
                    products=products(), history=history)


def right_ritz(z: Tensor, gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Singular triplets of J P, P = Wᵀ C an orthonormal basis of the rows W (C = V Λ^-½ from
    the Gram matrix W Wᵀ = V Λ Vᵀ, dropping directions below float64 rounding), from Z = J Wᵀ:
    (U, S, Vᵣ ↦ C Vᵣ) so that the right singular vectors are Wᵀ (C Vᵣ)."""
    lam, vec = torch.linalg.eigh(gram)
    keep = lam > lam.max().clamp_min(1e-300) * 1e-12
    c = vec[:, keep] / lam[keep].sqrt()
    u, s, vh = torch.linalg.svd(z @ c, full_matrices=False)
    return u, s, c @ vh.T


class _Aitken:
    """Stopping rule over a sequence of Ritz value vectors (see `remaining_error`)."""

    def __init__(self, k: int, tol: float):
        self.k, self.tol = k, tol
        self.prev = self.prev_change = None

    def converged(self, ritz: Tensor) -> bool:
        if len(ritz) < self.k:
            return False
        done = False
        if self.prev is not None:
            change = ((ritz - self.prev) / ritz.clamp_min(1e-300)).abs()
            if self.prev_change is not None:
                done = float(remaining_error(change, self.prev_change, self.tol)) < self.tol
            self.prev_change = change
        self.prev = ritz
        return done


def remaining_error(change: Tensor, prev_change: Tensor, tol: float = 0.0) -> Tensor:
    """The largest Aitken estimate of the error left in a Ritz value after two steps of geometric
    convergence: δ·r/(1−r) with r = δ/δ'; infinite when the changes do not shrink (r ≥ 0.9),
    except for changes below tol/100, the rounding floor of a converged value."""
    r = change / prev_change.clamp_min(1e-300)
    est = change * r / (1 - r).clamp_min(1e-12)
    est = torch.where(r < 0.9, est, torch.full_like(est, float("inf")))
    return torch.where(change < tol / 100, change, est).max()


def frobenius_outside(probes: Tensor, q: Tensor) -> float:
    """Hutchinson: E‖(I − QQᵀ) J ω‖² = ‖(I − QQᵀ) J‖_F² for Gaussian ω independent of Q."""
    if probes.shape[0] == 0:
        return 0.0
    resid = probes - (probes @ q) @ q.T
    return float((resid ** 2).sum() / probes.shape[0])


def dense_svd(jac: Tensor, k: int | None = None) -> Triplets:
    """SVD of a dense Jacobian [d_out, *input shape] (reshaped to d_out × n_in)."""
    mat = jac.reshape(jac.shape[0], -1)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    k = k or s.shape[0]
    return Triplets(U=u[:, :k], S=s[:k], V=vh[:k].reshape(-1, *jac.shape[1:]),
                    frobenius_sq=float((s.double() ** 2).sum()))
