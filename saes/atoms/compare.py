"""Neurons vs features vs atoms: the comparison of "Towards Atoms of Large Language Models"
(Hu et al., arXiv 2509.20784, v3 table: neurons R^2 = 1, q* = 0.5 %; features R^2 = 48.8 %,
q* = 68.2 %; atoms R^2 = 99.9 %, q* = 99.8 %), at several layers of one model.

Per hook: estimate S~ from the training rows; then on held-out rows measure, for
- neurons: the identity basis of the hooked space (codes = the activation's coordinates, so K is
  the number of non-zero coordinates and R^2 = 1 by definition);
- features: an ordinary top-k SAE trained on the raw activations (or a given SAE run);
- atoms: a JumpReLU SAE trained on the AIP-whitened activations (`saes.atoms.tsae`), |D| = 4H;
the per-unit AIP coherence (over units that fire on the held-out rows), mean L0, the RIP bound,
q* in its three labelled forms, faithfulness R^2 in the Euclidean and AIP norms, and the share of
codes that OMP recovers exactly from the dictionary's own reconstruction (a uniqueness check).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError
from saes.atoms.aip import angle_diagnostic, estimate_metric
from saes.atoms.coherence import faithfulness_r2, l0_per_sample, q_star, rip_bound, unit_coherence
from saes.atoms.recovery import omp, recovery_rate

log = logging.getLogger(__name__)
BASES = ("neurons", "features", "atoms")


@dataclass(frozen=True)
class AtomsConfig(Config):
    """Settings of one comparison run (`interp atoms` maps its flags onto these fields)."""

    model: str = ""  # default model if empty
    hooks: tuple[str, ...] = ("blocks.5.hook_resid_post", "blocks.15.hook_resid_post",
                              "blocks.25.hook_resid_post")
    n_tokens: int = 32_768  # tokens run through the model (BOS and outliers are dropped)
    corpus: str = "cpython"
    context_size: int = 128
    eval_every: int = 8  # every 8th row is held out for the measurements
    max_eval: int = 2048  # held-out rows measured
    center: bool = False  # S~ from E[k k^T] (the paper, literal) or from the covariance
    ridge: float = 1e-4  # times tr(Sigma)/H
    width_mult: int = 4  # |D| = width_mult * H (the paper: 4x)
    feature_k: int = 32  # top-k of the ordinary feature SAE
    atoms_l0_coefficient: float = 1.0  # JumpReLU L0 penalty on whitened, normalised rows
    train_tokens: int = 262_144  # rows seen by each SAE (several epochs over the data)
    batch_size: int = 1024
    lr: float = 4e-3
    n_angle_pairs: int = 20_000
    n_recovery: int = 32  # held-out samples checked with OMP ...
    omp_max_k: int = 64  # ... among those with L0 <= this
    atoms_init_threshold: float = 2.0  # in units of the whitened, normalised pre-activations
    sae_runs: tuple[str, ...] = ()  # SAE runs used as "features" for their hooks
    seed: int = 0
    device: str = "auto"  # where the model runs and the SAEs train (the analysis: float64, CPU)
    dtype: str = "float32"  # the model's compute dtype

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        object.__setattr__(self, "sae_runs", tuple(self.sae_runs))
        if not self.hooks:
            raise ConfigError("Name at least one hook (e.g. blocks.15.hook_resid_post).")
        if self.eval_every < 2 or self.width_mult < 1 or self.n_tokens < self.context_size:
            raise ConfigError("Need eval_every >= 2, width_mult >= 1, n_tokens >= context_size.")


def collect_activations(model, cfg: AtomsConfig, progress: bool = True) -> dict[str, Tensor]:
    """Rows of every hook from one forward pass per batch (BOS and >10x-median-norm outliers
    dropped, as the activation store does); float32, same rows in each hook."""
    from tqdm.auto import tqdm

    from interp.data import CorpusSpec
    from interp.caching import capture_batches
    from interp.store import StoreConfig

    scfg = StoreConfig(model=model.name, hooks=cfg.hooks, n_tokens=cfg.n_tokens,
                       context_size=cfg.context_size, corpus=CorpusSpec(source=cfg.corpus))
    parts: dict[str, list[Tensor]] = {h: [] for h in cfg.hooks}
    bar = tqdm(total=scfg.n_windows * cfg.context_size, unit="tok", unit_scale=True,
               desc="activations", disable=not progress)
    for ids, _, rows, _ in capture_batches(model, scfg):
        for h in cfg.hooks:
            parts[h].append(rows[h].float().cpu())  # the analysis runs on the host
        bar.update(ids.numel())
    bar.close()
    return {h: torch.cat(v) for h, v in parts.items()}


def split_rows(x: Tensor, cfg: AtomsConfig) -> tuple[Tensor, Tensor]:
    held = torch.zeros(x.shape[0], dtype=torch.bool)
    held[::cfg.eval_every] = True
    return x[~held], x[held][:cfg.max_eval]


def measure(D: Tensor, codes: Tensor, x: Tensor, x_hat: Tensor, S: Tensor,
            recover: tuple | None = None) -> dict:
    """The row of the table for one basis: D [N, H] unit rows, codes [n, N] on rows x [n, H]."""
    live = codes.abs().gt(0).any(0)
    mu = torch.zeros(D.shape[0], dtype=torch.float64)
    mu[live] = unit_coherence(D[live], S)
    k = l0_per_sample(codes).double()
    q = q_star(mu[live], codes[:, live])
    row = {"units": int(D.shape[0]), "live_units": int(live.sum()), "l0_mean": float(k.mean()),
           "l0_median": float(k.median()), "mu": float(mu[live].max()),
           "mu_median": float(mu[live].median()), "rip_bound": rip_bound(float(mu[live].max()),
                                                                         float(k.mean())),
           "q_star_quantile": q["quantile"], "q_star_per_unit": q["per_unit"],
           "q_star_per_sample": q["per_sample"], "r2_euclid": faithfulness_r2(x, x_hat),
           "r2_aip": faithfulness_r2(x, x_hat, S), "omp_exact": None, "omp_checked": 0}
    if recover is not None:  # (decoder rows, codes): is the code the unique sparse one?
        W, c, kmax = recover
        kc = l0_per_sample(c)
        c = c[(kc > 0) & (kc <= kmax)]  # denser codes cannot be unique (and OMP is slow there)
        row["omp_checked"] = int(c.shape[0])
        if c.shape[0]:
            found = omp(W, c.double() @ W.double(), int(l0_per_sample(c).max()), S)
            row["omp_exact"] = recovery_rate(c, found, rtol=1e-4)["exact"]
    return row, mu[live]


def _layer(hook: str) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else None


def compare_bases(acts: dict[str, Tensor], cfg: AtomsConfig, work_dir: str | Path,
                  feature_saes: dict | None = None, progress: bool = True) -> dict:
    """Run the comparison on `{hook: rows}`; trained dictionaries go under `work_dir`.
    Returns {"table": [rows], "angles": {hook: diagnostic}, "coherence": {key: mu_j}}."""
    from saes.atoms.tsae import atom_sae_config, train_whitened_sae
    from saes.base import SAEConfig
    from saes.formats import save_saelens

    work = Path(work_dir)
    table, angles, mus, metrics = [], {}, {}, {}
    for hook, x in acts.items():
        train, held = split_rows(x, cfg)
        H = x.shape[1]
        S = estimate_metric(train, center=cfg.center, ridge=cfg.ridge)
        angles[hook] = angle_diagnostic(held, S, center=cfg.center, n_pairs=cfg.n_angle_pairs,
                                        seed=cfg.seed)
        xd = held.double()
        results = {}
        # neurons: the identity basis; the codes are the coordinates themselves
        results["neurons"] = measure(torch.eye(H, dtype=torch.float64), xd, xd, xd, S)
        # features: an ordinary SAE on raw activations
        sae = (feature_saes or {}).get(hook)
        if sae is None:
            fcfg = SAEConfig(architecture="topk", d_in=H, d_sae=cfg.width_mult * H,
                             k=cfg.feature_k, hook_name=hook, model_name=cfg.model)
            sae = train_whitened_sae(train, None, work / f"{_slug(hook)}-features", fcfg,
                                     cfg.train_tokens, cfg.batch_size, cfg.lr, cfg.seed,
                                     progress, device=cfg.device)
        results["features"] = _measure_sae(sae, held, S, cfg)
        # atoms: a JumpReLU SAE on AIP-whitened activations, mapped back to raw space
        acfg = dataclasses.replace(atom_sae_config(H, cfg.width_mult * H, cfg.atoms_l0_coefficient,
                                                   hook, cfg.atoms_init_threshold),
                                   model_name=cfg.model)
        atoms = train_whitened_sae(train, S, work / f"{_slug(hook)}-atoms-whitened", acfg,
                                   cfg.train_tokens, cfg.batch_size, cfg.lr, cfg.seed, progress,
                                   device=cfg.device)
        save_saelens(atoms, work / f"{_slug(hook)}-atoms")
        results["atoms"] = _measure_sae(atoms, held, S, cfg)
        for basis in BASES:
            row, mu = results[basis]
            table.append({"hook": hook, "layer": _layer(hook), "basis": basis, **row})
            mus[f"{hook}/{basis}"] = mu.float()
        metrics[hook] = S
    return {"table": table, "angles": angles, "coherence": mus, "metrics": metrics}


def _measure_sae(sae, held: Tensor, S: Tensor, cfg: AtomsConfig):
    with torch.no_grad():
        codes = sae.encode(held.to(sae.W_dec.dtype)).double()
        x_hat = sae.decode(codes.to(sae.W_dec.dtype)).double()
    W = sae.W_dec.detach().double()
    n = min(cfg.n_recovery, held.shape[0])
    return measure(W, codes, held.double(), x_hat, S,
                   recover=(W, codes[:n], cfg.omp_max_k) if n else None)


def _slug(hook: str) -> str:
    return hook.replace(".", "_")


def load_feature_saes(sae_runs) -> dict:
    """{hook: dictionary} from SAE run directories (or SAELens directories)."""
    from saes.features.runs import load_dictionary

    out = {}
    for r in sae_runs:
        sae, facts = load_dictionary(r)
        if sae.cfg.transcoder:
            raise ConfigError(f"{r} is a transcoder; the comparison needs an SAE on one hook.")
        out[facts["hook"]] = sae.float()
    return out
