"""Layer-wise geometry of the residual stream, as defined by LLM-Microscope.

Razzhigaev et al., "LLM-Microscope" (arXiv 2502.15007) and "Your Transformer is Secretly Linear"
(arXiv 2405.12250):

- **Linearity score** between consecutive layers X = H^l, Y = H^{l+1} (n_tokens x d): centre
  both, divide each by its Frobenius norm, fit A = pinv(X) Y by least squares and report
  1 - ||XA - Y||_F^2. The *centred* variant uses Y = H^{l+1} - H^l (the residual update).
- **Token nonlinearity** E_i = ||A* h_i - h_{i+1}||_2 on the same normalised rows, with A* the map
  fitted for the linearity score on the token set being analysed.
- **Intrinsic dimension** by TwoNN (Facco et al. 2017, arXiv 1803.06992) as in the paper's
  notebook: centre, divide by the mean norm, mu_i = r2/r1, drop mu <= 1 + 1e-8, keep the smallest
  n // 5 (reduction factor 5) and regress -log(1 - F) on log mu through the origin.
- **Anisotropy** lambda_max / sum(lambda) of the covariance of centred embeddings (1/d for an
  isotropic cloud, 1 when all variance lies on one direction).

Every function takes float tensors and computes in float64 (exactness is claimed by the tests).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError

TWONN_REDUCTION = 5  # keep the smallest n // 5 ratios (the notebook's `reduction_factor`)


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InterpError(f"Linearity needs two [n_tokens, d] matrices with the same rows; got "
                          f"{tuple(x.shape)} and {tuple(y.shape)}.")
    if x.shape[0] < 2:
        raise InterpError("Linearity needs at least 2 tokens.")


def normalise(h: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    """Centre the rows and divide by the Frobenius norm (float64), the paper's Ĥ."""
    h = h.double()
    h = h - h.mean(0, keepdim=True)
    norm = torch.linalg.matrix_norm(h)
    return h / norm if norm > 0 else h


def _gram_eig(xn: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (clipped: rank-deficient directions dropped) and vectors of XᵀX."""
    evals, evecs = torch.linalg.eigh(xn.T @ xn)
    keep = evals > evals.max().clamp_min(0) * max(xn.shape) * torch.finfo(xn.dtype).eps * 10
    return evals[keep], evecs[:, keep]


def fit_linear_map(x: Float[Tensor, "n d_in"], y: Float[Tensor, "n d_out"],
                   eig: tuple[Tensor, Tensor] | None = None) -> Float[Tensor, "d_in d_out"]:
    """A = pinv(X) Y (the notebook's `get_est_svd`), through the eigendecomposition of XᵀX
    (d x d, cheaper than the SVD of X for n >> d; `eig` reuses one)."""
    evals, evecs = eig if eig is not None else _gram_eig(x)
    return evecs @ ((evecs.T @ (x.T @ y)) / evals[:, None])


def linear_residuals(x: Float[Tensor, "n d"], y: Float[Tensor, "n d"], centered: bool = False,
                     eig: tuple[Tensor, Tensor] | None = None) -> Float[Tensor, "n d"]:
    """Rows of Ĥ^l A* - Ĥ^{l+1} (or of the update Y - X when `centered`), A* fitted on them.
    `eig` is `_gram_eig(normalise(x))` when the caller already has it."""
    _check_pair(x, y)
    if centered:
        y = y.double() - x.double()
    xn, yn = normalise(x), normalise(y)
    return xn @ fit_linear_map(xn, yn, eig) - yn


def linearity_score(x: Float[Tensor, "n d"], y: Float[Tensor, "n d"],
                    centered: bool = False) -> float:
    """1 - ||XA - Y||_F^2 on centred, Frobenius-normalised X and Y (LLM-Microscope §3.1).

    `centered=True` scores the map to the update Y - X instead (`procrustes_similarity_centered`).
    1 for any invertible linear map Y = XR; near 0 for independent noise with n >> d.
    """
    return float(1.0 - (linear_residuals(x, y, centered) ** 2).sum())


def token_nonlinearity(x: Float[Tensor, "n d"], y: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
    """E_i = ||A* ĥ_i - ĥ_{i+1}||_2 per token (paper eq. 1-2), A* fitted on these same rows.

    The squares sum to 1 - linearity_score(x, y).
    """
    return linear_residuals(x, y).norm(dim=-1)


def twonn_dimension(x: Float[Tensor, "n d"], reduction: int = TWONN_REDUCTION) -> float:
    """Intrinsic dimension by TwoNN (Facco et al.), with the LLM-Microscope notebook's choices.

    Repeated points are counted once (TwoNN needs r1 > 0; the embedding layer repeats a vector
    for every occurrence of a token).
    """
    if x.ndim == 2:
        x = torch.unique(x.double(), dim=0)
    if x.ndim != 2 or x.shape[0] < 3 * reduction:
        raise InterpError(f"TwoNN needs a [n_points, d] matrix with at least {3 * reduction} "
                          f"distinct points; got shape {tuple(x.shape)}.")
    x = x - x.mean(0, keepdim=True)
    x = x / x.norm(dim=-1).mean().clamp_min(1e-300)
    n = x.shape[0]
    r = torch.empty(n, 2, dtype=torch.float64)
    for start in range(0, n, 2048):  # chunked pairwise distances keep memory at 2048 x n
        d = torch.cdist(x[start:start + 2048], x)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = math.inf
        r[start:start + 2048] = d.topk(2, dim=1, largest=False).values
    mu = r[:, 1] / r[:, 0]
    mu = mu[torch.isfinite(mu)]
    n_all = mu.numel()
    mu = mu[mu > 1 + 1e-8].sort().values
    dropped = n_all - mu.numel()
    f = (torch.arange(1, mu.numel() + 1, dtype=torch.float64) + dropped) / n_all
    keep = n_all // reduction
    if keep < 2 or mu.numel() < keep:
        raise InterpError("TwoNN found too few distinct neighbour ratios (duplicate points?).")
    lx, ly = mu[:keep].log(), -torch.log1p(-f[:keep])
    return float((lx * ly).sum() / (lx * lx).sum())


def anisotropy(x: Float[Tensor, "n d"]) -> float:
    """lambda_max / sum(lambda) of the covariance of the centred rows (1/d when isotropic)."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise InterpError(f"Anisotropy needs a [n_points, d] matrix with >= 2 rows; got "
                          f"{tuple(x.shape)}.")
    return _anisotropy_from_eig(torch.linalg.eigvalsh(normalise(x).T @ normalise(x)))


def _anisotropy_from_eig(evals: Tensor) -> float:
    """λ_max / Σλ from eigenvalues of the (scaled) covariance: the scale cancels."""
    evals = evals.clamp_min(0)
    total = evals.sum()
    return float(evals.max() / total) if total > 0 else 0.0


def layer_geometry(states: Float[Tensor, "layer n d"], max_points_twonn: int = 4096,
                   progress: bool = False) -> dict:
    """Every geometry metric per layer of stacked residual states (layer 0 = the embeddings).

    Returns plain lists: `linearity[l]` and `linearity_centered[l]` score the map l -> l+1
    (length n_layers), `intrinsic_dim[l]` and `anisotropy[l]` describe state l (length
    n_layers + 1; NaN where a layer has too few distinct points for TwoNN), and
    `token_nonlinearity` is a [n_layers, n] nested list (the map l -> l+1).
    """
    from tqdm.auto import tqdm

    if states.ndim != 3 or states.shape[0] < 2:
        raise InterpError(f"layer_geometry needs [layers, tokens, d] with >= 2 layers; got "
                          f"{tuple(states.shape)}.")
    n_states = states.shape[0]
    out: dict[str, list] = {"linearity": [], "linearity_centered": [], "token_nonlinearity": [],
                            "intrinsic_dim": [], "anisotropy": []}
    sub = states[:, :max_points_twonn]
    for layer in tqdm(range(n_states), desc="geometry", disable=not progress):
        x = states[layer]
        eig = _gram_eig(normalise(x))  # serves the anisotropy and both fits from this layer
        if layer + 1 < n_states:
            y = states[layer + 1]
            e = linear_residuals(x, y, eig=eig).norm(dim=-1)  # the score and the E_i at once
            out["linearity"].append(float(1.0 - (e ** 2).sum()))
            out["linearity_centered"].append(float(
                1.0 - (linear_residuals(x, y, centered=True, eig=eig) ** 2).sum()))
            out["token_nonlinearity"].append(e.float().tolist())
        out["anisotropy"].append(_anisotropy_from_eig(eig[0]))
        try:
            out["intrinsic_dim"].append(twonn_dimension(sub[layer]))
        except InterpError:  # too few distinct points at this layer: no estimate
            out["intrinsic_dim"].append(float("nan"))
    return out
