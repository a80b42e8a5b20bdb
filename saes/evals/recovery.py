"""Metrics against known features (the synthetic suite): recovery, detection, absorption, splitting.

- **Recovery**: cos(d_j, f_i) between decoder rows and true features; each true feature is
  matched to one latent by the Hungarian assignment maximising the total cosine (Kuhn 1955), and
  `recovery` is the mean matched cosine (1.0 for the true dictionary). `mcc` is SAELens's
  mean correlation coefficient (the same matching on |cos|; arXiv 2505.20254). `max_cos` is the
  unmatched best cosine per feature, whose expectation for a random decoder is analytic
  (`expected_max_cos`).
- **Detection**: the matched latent as a classifier of its feature firing (precision, recall,
  F1; SynthSAEBench's classification metrics, per true feature rather than per latent).
- **Absorption** (Chanin et al., "A is for Absorption", arXiv 2409.14507; SAEBench's absorption
  fraction with the true parent direction in place of the probe and the parent's true magnitude
  c_p in place of the probe projection, so that interference from other features in
  superposition is not counted): on rows where a parent feature p fires, c_p is split between
  its own (matched) latent and other active latents aligned with f_p (cos >= 0.1, at most 3,
  positive contribution a_j d_j . f_p).
  absorption fraction = 0 if the main latent accounts for the projection or the absorbers carry
  < 40 % of it, 1 if the main latent is silent, else absorbers / (absorbers + main). Full
  absorption: the main latent silent and the top contributing latent (cos >= 0.025) carrying
  >= 40 %. The true dictionary scores 0; a dictionary whose child latents carry the parent
  direction while the parent latent stays silent scores P(child | parent).
- **Splitting**: a true feature is split when two or more latents have decoder cosine >= 0.7
  with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError

ABSORBER_COS = 0.1
FULL_ABSORPTION_COS = 0.025
PROJECTION_SHARE = 0.4
MAX_ABSORBERS = 3
SPLIT_COS = 0.7
EPS = 1e-8
#: an activation above this counts as firing (ReLU encoders leave float noise of ~1e-7)
FIRE_EPS = 1e-5


def unit_rows(w: Tensor) -> Tensor:
    w = w.detach().float()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosines(W_dec: Float[Tensor, "d_sae d"], features: Float[Tensor, "F d"]
            ) -> Float[Tensor, "F d_sae"]:
    """cos(f_i, d_j) for every true feature i and latent j."""
    if W_dec.shape[1] != features.shape[1]:
        raise ConfigError(f"Decoder rows have {W_dec.shape[1]} dims, the features "
                          f"{features.shape[1]}; evaluate the dictionary on its own data.")
    return unit_rows(features) @ unit_rows(W_dec).T


def hungarian(score: Tensor) -> np.ndarray:
    """For each row (true feature), the column (latent) of a maximum-total-score one-to-one
    assignment; -1 where there are fewer columns than rows and the row got none."""
    from scipy.optimize import linear_sum_assignment

    s = score.detach().double().cpu().numpy()
    rows, cols = linear_sum_assignment(s, maximize=True)
    out = np.full(s.shape[0], -1, dtype=np.int64)
    out[rows] = cols
    return out


@torch.no_grad()
def feature_recovery(W_dec: Tensor, features: Tensor) -> dict:
    """Per true feature: matched latent and cosine, best cosine; and the means."""
    cos = cosines(W_dec, features)
    match = hungarian(cos)
    idx = torch.as_tensor(np.maximum(match, 0))
    matched = cos.gather(1, idx[:, None]).squeeze(1) * torch.as_tensor(match >= 0)
    mcc_match = hungarian(cos.abs())
    mcc = cos.abs().gather(1, torch.as_tensor(np.maximum(mcc_match, 0))[:, None]).squeeze(1)
    mcc = mcc * torch.as_tensor(mcc_match >= 0)
    best = cos.max(dim=1).values
    return {"match": match, "matched_cos": matched.numpy().astype(np.float64),
            "max_cos": best.numpy().astype(np.float64), "recovery": float(matched.mean()),
            "mcc": float(mcc.mean()), "mean_max_cos": float(best.mean())}


def expected_max_cos(d: int, m: int, grid: int = 20_001) -> float:
    """E[max_j cos(u_j, v)] for m independent uniformly random unit vectors u_j in R^d and a
    fixed unit v. (cos + 1) / 2 ~ Beta((d-1)/2, (d-1)/2), so with F its CDF,
    E[max] = integral over [-1, 1] of (1 - F(t)^m) dt - 1."""
    from scipy.special import betainc

    if d < 2 or m < 1:
        raise ConfigError(f"Need d >= 2 and m >= 1, got {d}, {m}.")
    t = np.linspace(-1.0, 1.0, grid)
    a = (d - 1) / 2
    F = betainc(a, a, (t + 1) / 2)
    integrand = 1 - np.exp(m * np.log(np.clip(F, 1e-300, 1.0)))
    return float(np.trapezoid(integrand, t) - 1.0)


@torch.no_grad()
def detection(acts: Float[Tensor, "n d_sae"], codes: Float[Tensor, "n F"], match: np.ndarray
              ) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each true feature's matched latent as a detector of it."""
    F = codes.shape[1]
    ok = torch.as_tensor(match >= 0)
    lat = torch.as_tensor(np.maximum(match, 0))
    fires = (acts[:, lat] > FIRE_EPS) & ok
    truth = codes > 0
    tp = (fires & truth).sum(0).double()
    fp = (fires & ~truth).sum(0).double()
    fn = (~fires & truth).sum(0).double()
    prec = torch.where(tp + fp > 0, tp / (tp + fp), torch.zeros(F, dtype=torch.float64))
    rec = torch.where(tp + fn > 0, tp / (tp + fn), torch.zeros(F, dtype=torch.float64))
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec), torch.zeros_like(prec))
    return {"precision": prec.numpy(), "recall": rec.numpy(), "f1": f1.numpy()}


@torch.no_grad()
def absorption_scores(acts: Float[Tensor, "r d_sae"], contrib: Float[Tensor, " d_sae"],
                      cos: Float[Tensor, " d_sae"], total: Float[Tensor, " r"], main: list[int]
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """SAEBench's absorption fraction and full absorption for r examples of one concept.

    `contrib[j]` is latent j's contribution to the concept direction per unit activation
    (d_j . p for a unit direction p), `cos[j]` its decoder cosine with p, `total` the
    activation's own projection x . p, `main` the concept's main latents. Returns
    (absorption fraction [r], full absorption [r] bool, main latents fired [r] bool).
    """
    a = acts.float()
    proj = a * contrib
    main_t = torch.as_tensor(main, dtype=torch.long)
    main_proj = proj[:, main_t].sum(1)
    main_fired = (a[:, main_t] > FIRE_EPS).any(1) if len(main) else torch.zeros(len(a), dtype=bool)
    others = proj.clone()
    others[:, main_t] = 0
    cand = torch.where((cos >= ABSORBER_COS) & (others > 0), others, torch.zeros_like(others))
    top = cand.topk(min(MAX_ABSORBERS, cand.shape[1]), dim=1).values.sum(1)
    share = top / torch.where(total.abs() < EPS, torch.full_like(total, EPS), total)
    frac = torch.zeros(len(a))
    # "main < total", with float rounding of a unit decoder row (d . f = 1 - 6e-8) ignored
    partial = (main_proj < total - 1e-5 * total.abs()) & (share >= PROJECTION_SHARE)
    silent = partial & (main_proj <= 0)
    absorbed = torch.minimum(top, total - main_proj)
    mixed = partial & ~silent
    frac[mixed] = (absorbed / (absorbed + main_proj).clamp_min(EPS))[mixed].clamp(0, 1)
    frac[silent] = 1.0
    best_val, best_idx = proj.max(dim=1)
    full = (~main_fired & (cos[best_idx] >= FULL_ABSORPTION_COS) & (total > 0)
            & (best_val / total.clamp_min(EPS) >= PROJECTION_SHARE))
    return frac, full, main_fired


@torch.no_grad()
def absorption_rows(acts: Tensor, W_dec: Tensor, features: Tensor, codes: Tensor,
                    parents: list[int], match: np.ndarray) -> dict[str, np.ndarray]:
    """One record per (parent, row where the parent fires), with the parent's true direction
    as the concept and its matched latent as the main latent."""
    out: dict[str, list] = {"parent": [], "row": [], "absorption_fraction": [],
                            "full_absorption": [], "main_fired": []}
    Wd = W_dec.detach().float()
    for p in parents:
        rows = torch.nonzero(codes[:, p] > 0).flatten()
        if rows.numel() == 0:
            continue
        fp = unit_rows(features[p:p + 1])[0]
        main = [int(match[p])] if match[p] >= 0 else []
        frac, full, fired = absorption_scores(acts[rows], Wd @ fp, unit_rows(Wd) @ fp,
                                              codes[rows, p].float(), main)
        out["parent"].append(np.full(len(rows), p))
        out["row"].append(rows.numpy())
        out["absorption_fraction"].append(frac.numpy())
        out["full_absorption"].append(full.numpy())
        out["main_fired"].append(fired.numpy())
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}


def splitting(W_dec: Tensor, features: Tensor, threshold: float = SPLIT_COS) -> np.ndarray:
    """Number of latents with decoder cosine >= threshold, per true feature."""
    return (cosines(W_dec, features) >= threshold).sum(1).numpy()


def mean_over_groups(values: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of the per-group mean (each parent weighs the same)."""
    if values.size == 0:
        return math.nan
    return float(np.mean([values[groups == g].mean() for g in np.unique(groups)]))
