"""Training with codebooks in place (Codebook Features, arXiv 2310.17230, section 2.1).

Two objectives:

- `"lm"` (the paper): next-token cross-entropy of the model with every codebook in place; the
  codebooks also get the reconstruction gradient of their snap function (aeloss). The model's
  own weights are trained too unless `train_model=False` (the codebooks then still learn from
  the LM loss through the straight-through estimator).
- `"reconstruction"`: codebooks alone, fitted to the hooks' activations of the unmodified
  model by the aeloss term (mean ||mean(C[ids]) - x_hat||^2): no backward pass through the
  model, so it fits a frozen large model on a CPU (a clean k-means-like fit).

Dead codes (no firing since the last check) are re-seeded from current inputs every
`replace_every` steps, as the paper's `replace_after_steps`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from interp.config import Config
from interp.errors import ConfigError
from saes.codebook.bottleneck import normalise
from saes.codebook.insert import CodebookModel

log = logging.getLogger(__name__)
OBJECTIVES = ("lm", "reconstruction")


@dataclass(frozen=True)
class CodebookTrainConfig(Config):
    """Optimisation settings (TokFSM paper: AdamW, lr 1e-3; language models: lr 5e-4)."""

    steps: int = 1000
    lr: float = 1e-3
    codebook_lr_factor: float = 1.0
    weight_decay: float = 0.0
    objective: str = "lm"  # "lm" | "reconstruction"
    train_model: bool = True
    warmup_steps: int = 0
    decay: str = "none"  # "none" | "cosine"
    replace_every: int = 0  # 0: never re-seed dead codes
    replace_rho: float = 1e-4
    grad_clip: float = 1.0
    log_every: int = 25
    seed: int = 0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}.")
        if self.objective == "reconstruction" and self.train_model:
            object.__setattr__(self, "train_model", False)
        if self.steps < 1 or self.lr <= 0:
            raise ConfigError(f"steps must be >= 1 and lr > 0, got {self.steps}, {self.lr}.")
        if self.decay not in ("none", "cosine"):
            raise ConfigError(f"decay must be 'none' or 'cosine', not {self.decay!r}.")


def lm_loss(logits: Tensor, ids: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy (positions whose target is masked out are skipped)."""
    lp = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    tgt = ids[:, 1:].reshape(-1).to(lp.device)
    if mask is None:
        return F.cross_entropy(lp, tgt)
    m = mask[:, 1:].reshape(-1).bool().to(lp.device)
    return F.cross_entropy(lp[m], tgt[m])


def _lr_factor(step: int, cfg: CodebookTrainConfig) -> float:
    f = 1.0
    if cfg.warmup_steps:
        f = min(1.0, (step + 1) / cfg.warmup_steps)
    if cfg.decay == "cosine":
        f *= 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
    return f


@torch.no_grad()
def init_codebooks_from_data(cb: CodebookModel, ids: Tensor, kmeans_iters: int = 10,
                             seed: int = 0, mask: Tensor | None = None) -> None:
    """Initialise every codebook from the hooks' activations of the model without codebooks
    on `ids` (random rows, then `kmeans_iters` Lloyd steps: the paper's k-means init)."""
    model = cb.model
    _, cache = model.run_with_cache(ids, hooks=cb.hook_names, attention_mask=mask,
                                    stop_at_layer=model.stop_layer_for(cb.hook_names))
    gen = torch.Generator().manual_seed(seed)
    for h, layer in cb.items():
        x = cache[h] if model.hook_points[h].heads else cache[h].unsqueeze(-2)
        if mask is not None:
            x = x[mask.bool()]
        layer.init_from_data(x.reshape(-1, layer.groups, layer.d), kmeans_iters, gen)


def train_codebooks(cb: CodebookModel, batches: Iterable[Tensor], cfg: CodebookTrainConfig,
                    callback: Callable[[int, dict], None] | None = None,
                    progress: bool = True, use_codebooks: bool = True) -> list[dict]:
    """Train for `cfg.steps` steps on token batches ([batch, pos] ids, or (ids, mask) pairs).

    Returns the logged records ({step, loss, ce, mse, active_frac, tokens, seconds}).
    `callback(step, record)` runs at every log step (evaluation, early stopping by raising).
    `use_codebooks=False` trains the plain model (a pre-training phase; objective "lm").
    """
    model = cb.model
    model_params = [p for p in model.hf_model.parameters()]
    for p in model_params:
        p.requires_grad_(cfg.train_model)
    groups = []
    if use_codebooks:  # Adam's steps are absolute: scale them to raw-space codes' RMS
        for _, layer in cb.items():
            scale = 1.0 if layer.cfg.layer_norm else float(layer.codebook.detach().pow(2).mean()
                                                           .sqrt().clamp_min(1e-8))
            groups.append({"params": [layer.codebook], "weight_decay": 0.0,
                           "lr": cfg.lr * cfg.codebook_lr_factor * scale})
    elif not cfg.train_model or cfg.objective != "lm":
        raise ConfigError("use_codebooks=False trains the model itself: it needs objective "
                          "'lm' and train_model=True.")
    if cfg.train_model:
        groups.append({"params": model_params, "lr": cfg.lr, "weight_decay": cfg.weight_decay})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups)
    gen = torch.Generator().manual_seed(cfg.seed)
    deepest = model.stop_layer_for(cb.hook_names)
    records: list[dict] = []
    tokens = 0
    t0 = time.perf_counter()
    it = iter(batches)
    cb.reset_counts()
    bar = tqdm(range(cfg.steps), desc=f"codebooks ({cfg.objective})", disable=not progress)
    try:
        for step in bar:
            try:
                batch = next(it)
            except StopIteration:
                raise ConfigError(f"The batch source ran out after {step} steps; give at least "
                                  f"{cfg.steps} batches or lower steps.") from None
            ids, mask = batch if isinstance(batch, (tuple, list)) else (batch, None)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * _lr_factor(step, cfg)
            if not use_codebooks:
                loss = ce = lm_loss(model(ids, attention_mask=mask), ids, mask)
                mse = torch.tensor(float("nan"))
            elif cfg.objective == "lm":
                logits = cb(ids, attention_mask=mask)
                ce = lm_loss(logits, ids, mask)
                loss = ce
                mse = torch.stack([_last_mse(layer) for _, layer in cb.items()]).mean()
            else:
                _, cache = model.run_with_cache(ids, hooks=cb.hook_names, stop_at_layer=deepest,
                                                attention_mask=mask)
                mses = []
                for h, layer in cb.items():
                    x = cache[h] if model.hook_points[h].heads else cache[h].unsqueeze(-2)
                    if mask is not None:
                        x = x[mask.bool()]
                    mses.append(layer.reconstruction_loss(x))
                    layer.last_input = normalise(x.detach(), layer.cfg.layer_norm)
                loss = torch.stack(mses).sum()
                mse, ce = loss.detach() / len(mses), torch.tensor(float("nan"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip and cfg.train_model:
                torch.nn.utils.clip_grad_norm_(model_params, cfg.grad_clip)
            opt.step()
            tokens += ids.numel()
            if use_codebooks and cfg.replace_every and (step + 1) % cfg.replace_every == 0:
                n = sum(layer.replace_dead_codes(rho=cfg.replace_rho, generator=gen)
                        for _, layer in cb.items())
                if n:
                    log.info("step %d: re-seeded %d dead codes", step + 1, n)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                active = [float((layer.counts > 0).float().mean()) for _, layer in cb.items()]
                rec = {"step": step + 1, "loss": float(loss.detach()), "ce": float(ce.detach()),
                       "mse": float(mse),
                       "active_frac": sum(active) / len(active), "tokens": tokens,
                       "seconds": round(time.perf_counter() - t0, 2)}
                records.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", active=f"{rec['active_frac']:.2f}")
                if callback is not None:
                    callback(step + 1, rec)
    finally:
        for p in model_params:
            p.requires_grad_(False)
        model.hf_model.eval()
    return records


@torch.no_grad()
def _last_mse(layer) -> Tensor:
    if layer.last_input is None or layer.last_ids is None:
        return torch.tensor(float("nan"))
    out = layer.decode(layer.last_ids)
    return ((out - layer.last_input) ** 2).sum(dim=(-1, -2)).mean()
