"""Synthetic activations with known sparse features, in the spirit of SAELens's SynthSAEBench.

Every row is x = sum_i c_i f_i + noise: `n_features` unit directions f_i in R^d (random, so in
superposition when n_features > d, or orthonormal), and a sparse non-negative code c. What is
known makes every metric checkable against the truth:

- **frequencies**: feature i fires with probability p_i proportional to (i + 1)^-zipf_exponent,
  scaled so the free features give `mean_l0` active features per row on average;
- **correlation**: firing is decided by a Gaussian copula, z = L e + sqrt(1 - |L_i|^2) u with a
  random rank-`correlation_rank` loading matrix L, feature i firing when Phi(z_i) < p_i (so each
  marginal stays p_i while firings co-occur);
- **hierarchy**: the first `n_parents` features are parents (the most frequent ones); each has
  `children_per_parent` children that fire only with their parent: given the parent, one child
  (chosen uniformly) fires with probability `child_given_parent` (mutually exclusive), or each
  child independently with that probability;
- **magnitudes**: |N(magnitude_mean, magnitude_std)| for each active feature.

A dictionary that learns f_i exactly and fires latent i exactly when feature i fires is the
"true dictionary" (`true_dictionary`): with orthonormal features its ReLU encoder recovers the
codes exactly. Absorption (a parent latent that stops firing when a child fires, the child
latent carrying the parent's direction; Chanin et al., arXiv 2409.14507) and splitting are
measured against this structure by `saes.evals.recovery`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError


@dataclass(frozen=True)
class SyntheticConfig(Config):
    """The generator's settings (serialised into the eval report)."""

    d: int = 64
    n_features: int = 512
    mean_l0: float = 6.0  # expected active free features (parents included) per row
    zipf_exponent: float = 0.5
    n_parents: int = 16
    children_per_parent: int = 4
    child_given_parent: float = 0.6
    mutually_exclusive_children: bool = True
    correlation_rank: int = 8
    correlation_scale: float = 0.4  # norm of each feature's copula loadings (< 1)
    magnitude_mean: float = 1.0
    magnitude_std: float = 0.2
    noise_std: float = 0.0
    orthogonal: bool = False  # orthonormal features (needs n_features <= d)
    max_prob: float = 0.5  # cap on any firing probability

    def __post_init__(self):
        if self.d < 1 or self.n_features < 1:
            raise ConfigError(f"d and n_features must be >= 1, got {self.d}, {self.n_features}.")
        if self.orthogonal and self.n_features > self.d:
            raise ConfigError(f"orthogonal=True needs n_features <= d ({self.n_features} > "
                              f"{self.d}); lower n_features or set orthogonal=False.")
        if self.n_hierarchy > self.n_features:
            raise ConfigError(f"The hierarchy needs n_parents * (1 + children_per_parent) = "
                              f"{self.n_hierarchy} features, more than n_features "
                              f"{self.n_features}.")
        if not 0 <= self.correlation_scale < 1:
            raise ConfigError(f"correlation_scale must be in [0, 1), got {self.correlation_scale}.")
        if not 0 <= self.child_given_parent <= 1 or not 0 < self.max_prob <= 1:
            raise ConfigError("child_given_parent must be in [0, 1] and max_prob in (0, 1].")
        if self.mean_l0 <= 0:
            raise ConfigError(f"mean_l0 must be > 0, got {self.mean_l0}.")

    @property
    def n_hierarchy(self) -> int:
        return self.n_parents * (1 + self.children_per_parent)


@dataclass
class SyntheticData:
    """Rows, their true codes, the true features and the hierarchy."""

    x: Float[Tensor, "n d"]
    codes: Float[Tensor, "n n_features"]
    features: Float[Tensor, "n_features d"]  # unit rows
    parent: Int[Tensor, " n_features"]  # parent feature of each feature, -1 for none
    probs: Float[Tensor, " n_features"]  # marginal firing probabilities
    cfg: SyntheticConfig

    @property
    def parents(self) -> list[int]:
        return sorted({int(p) for p in self.parent.tolist() if p >= 0})

    def children(self, p: int) -> list[int]:
        return torch.nonzero(self.parent == p).flatten().tolist()

    def split(self, n_train: int) -> tuple[SyntheticData, SyntheticData]:
        """The first `n_train` rows and the rest, sharing features and hierarchy."""
        a = dataclasses.replace(self, x=self.x[:n_train], codes=self.codes[:n_train])
        b = dataclasses.replace(self, x=self.x[n_train:], codes=self.codes[n_train:])
        return a, b


_SEED_SALT = 0x5EED_F00D


class SyntheticModel:
    """The fixed part of a synthetic benchmark (features, probabilities, copula, hierarchy):
    `sample(n, seed)` draws fresh rows from the same distribution."""

    def __init__(self, cfg: SyntheticConfig = SyntheticConfig(), seed: int = 0):
        self.cfg = cfg
        # a stream of its own: dictionaries initialised with the same small seed draw the same
        # Gaussians, which would make a "random" decoder equal to the true features
        g = torch.Generator().manual_seed(_SEED_SALT + seed)
        F, d = cfg.n_features, cfg.d
        if cfg.orthogonal:
            q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
            self.features = q.T[:F].float().contiguous()
        else:
            f = torch.randn(F, d, generator=g)
            self.features = f / f.norm(dim=1, keepdim=True)
        parent = torch.full((F,), -1, dtype=torch.long)
        P, C = cfg.n_parents, cfg.children_per_parent
        for p in range(P):
            parent[P + p * C: P + (p + 1) * C] = p
        self.parent = parent
        free = parent < 0
        rank = torch.arange(F, dtype=torch.float64)
        w = (rank + 1).pow(-cfg.zipf_exponent) * free
        self.free_probs = (w / w.sum() * cfg.mean_l0).clamp(max=cfg.max_prob)
        self.probs = self.free_probs.clone()
        for p in range(P):  # children: P(parent) * (share of the child given the parent)
            share = cfg.child_given_parent / C if cfg.mutually_exclusive_children \
                else cfg.child_given_parent
            self.probs[parent == p] = self.free_probs[p] * share
        r = max(1, cfg.correlation_rank)
        L = torch.randn(F, r, generator=g, dtype=torch.float64)
        self.loadings = L / L.norm(dim=1, keepdim=True) * cfg.correlation_scale

    def sample(self, n: int, seed: int = 0, chunk: int = 65_536) -> SyntheticData:
        """`n` rows (drawn in chunks, so memory stays bounded)."""
        cfg = self.cfg
        g = torch.Generator().manual_seed(2 * _SEED_SALT + seed)
        xs, cs = [], []
        free = self.parent < 0
        thresh = torch.special.ndtri(self.free_probs[free].clamp(1e-12, 1 - 1e-12)).float()
        load = self.loadings[free].float()
        resid = (1 - load.pow(2).sum(1)).clamp_min(0).sqrt()
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            z = (torch.randn(m, load.shape[1], generator=g) @ load.T
                 + torch.randn(m, load.shape[0], generator=g) * resid)
            fire = torch.zeros(m, cfg.n_features, dtype=torch.bool)
            fire[:, free] = z < thresh
            self._children(fire, g)
            codes = torch.zeros(m, cfg.n_features)
            on = fire.nonzero(as_tuple=True)
            codes[on] = (cfg.magnitude_mean + cfg.magnitude_std
                         * torch.randn(len(on[0]), generator=g)).abs()
            x = codes @ self.features
            if cfg.noise_std > 0:
                x = x + cfg.noise_std * torch.randn(m, cfg.d, generator=g)
            xs.append(x)
            cs.append(codes)
        return SyntheticData(x=torch.cat(xs), codes=torch.cat(cs), features=self.features,
                             parent=self.parent, probs=self.probs.float(), cfg=cfg)

    def _children(self, fire: Tensor, g: torch.Generator) -> None:
        """Switch children on under their active parents (in place)."""
        cfg = self.cfg
        m, C = fire.shape[0], cfg.children_per_parent
        for p in range(cfg.n_parents):
            kids = torch.nonzero(self.parent == p).flatten()
            on = fire[:, p] & (torch.rand(m, generator=g) < cfg.child_given_parent)
            if cfg.mutually_exclusive_children:
                pick = torch.randint(0, C, (m,), generator=g)
                fire[on, kids[pick[on]]] = True
            else:
                each = fire[:, p:p + 1] & (torch.rand(m, C, generator=g) < cfg.child_given_parent)
                fire[:, kids] = each


def generate(cfg: SyntheticConfig = SyntheticConfig(), n: int = 50_000, seed: int = 0,
             model_seed: int | None = None) -> SyntheticData:
    """`n` rows of the benchmark with features from `model_seed` (default `seed`)."""
    return SyntheticModel(cfg, seed if model_seed is None else model_seed).sample(n, seed)


def true_dictionary(data: SyntheticData | SyntheticModel):
    """A ReLU dictionary whose encoder and decoder rows are the true features (zero biases):
    decoder cosine 1 with every feature; with orthonormal features and no noise its codes are
    the true codes exactly."""
    from saes.architectures import architecture_class
    from saes.base import SAEConfig

    f = data.features
    cfg = SAEConfig(architecture="standard", d_in=f.shape[1], d_sae=f.shape[0])
    sae = architecture_class("standard")(cfg)
    with torch.no_grad():
        sae.enc_weight.copy_(f)
        sae.W_dec.copy_(f)
    return sae.eval()


def expected_l0(model: SyntheticModel) -> float:
    """The expected number of active features per row (free, parents and children)."""
    return float(model.probs.sum())


def synthetic_sae_config(sae_cfg, cfg: SyntheticConfig, true_l0: float):
    """The run's architecture and sparsity settings resized for synthetic data: d_in = d,
    d_sae = n_features, top-k style k = round(true L0); other settings carried over."""
    from saes.architectures import architecture_class

    own = architecture_class(sae_cfg.architecture).options  # the settings it may be given
    resized = {"k": max(1, int(round(true_l0))),
               "aux_k": min(sae_cfg.aux_k, cfg.n_features // 2)}
    if sae_cfg.matryoshka_widths:  # keep the nesting proportions
        resized["matryoshka_widths"] = tuple(sorted({max(1, min(cfg.n_features - 1, int(
            math.ceil(w / sae_cfg.d_sae * cfg.n_features)))) for w in sae_cfg.matryoshka_widths}))
    return dataclasses.replace(sae_cfg, d_in=cfg.d, d_sae=cfg.n_features, d_out=None,
                               transcoder=False, skip=False, hook_name="", hook_name_out="",
                               dtype="float32", **{k: v for k, v in resized.items() if k in own})
