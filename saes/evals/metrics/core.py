"""Suite "core": reconstruction and spliced-model metrics (`saes.evaluate`) with intervals.

The figures are SAELens's (`saes.evaluate`): FVU / explained variance, L0, cosine similarity,
CE loss score and KL score with the dictionary spliced in. Here each comes with a bootstrap
interval: over held-out rows for the reconstruction ratios (FVU = sum of squared errors / sum of
squared deviations, resampled as a ratio of sums) and over token windows for the CE and KL
scores (resampled by window, since the positions of one window are correlated). The rows are the
run's activation store's held-out split when it has one, else the evaluation windows' tokens.
The `neurons` and `pca` baselines reconstruct exactly, so their spliced-model scores are 1 by
construction and are not recomputed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from saes.evals.bootstrap import ratio_interval
from saes.evals.context import EvalContext
from saes.evals.registry import SuiteResult, metric_row, register_suite

SUITE = "core"
EXACT = ("neurons", "pca")


def _rows(ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    cfg = ctx.sae.cfg
    if ctx.store is not None and cfg.hook_name in ctx.store.hooks:
        x = ctx.store.activations(cfg.hook_name, split="eval")[:ctx.cfg.eval_rows]
        y = (ctx.store.activations(cfg.hook_name_out, split="eval")[:ctx.cfg.eval_rows]
             if cfg.transcoder else None)
        return x.float(), (None if y is None else y.float()), "store"
    if cfg.transcoder:
        from interp.errors import ConfigError

        raise ConfigError("The core suite of a transcoder needs its activation store (the "
                          "output hook's rows); pass store= or a run with one.")
    return ctx.data().rows(ctx.cfg.eval_rows), None, "windows"


@torch.no_grad()
def per_row(sae, x: torch.Tensor, y: torch.Tensor | None, batch: int = 4096) -> dict:
    """Per-row squared error, squared deviation from the mean target, L0 and cosine."""
    y = x if y is None else y
    p = next(sae.parameters())
    mean = y.double().mean(0)
    out = {k: [] for k in ("resid", "var", "l0", "cos")}
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].to(p.device, p.dtype)
        yb = y[i:i + batch].double().to(p.device)
        acts = sae.encode(xb)
        yhat = sae.decode(acts, xb).double()
        out["resid"].append((yb - yhat).pow(2).sum(1).cpu())
        out["var"].append((yb - mean.to(p.device)).pow(2).sum(1).cpu())
        out["l0"].append((acts != 0).sum(1).double().cpu())
        out["cos"].append(F.cosine_similarity(yhat, yb, dim=-1, eps=1e-8).cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def _lm(ctx: EvalContext, sae) -> dict:
    from saes.evaluate import spliced_lm_metrics

    if ctx.store is not None:
        windows = ctx.store.tokens()[::50][:ctx.cfg.lm_windows]
    else:
        windows = ctx.data().tokens[:ctx.cfg.lm_windows]
    return spliced_lm_metrics(ctx.model(), sae, windows, batch_size=4, per_window=True,
                              progress=ctx.progress)


def _score_interval(ctx: EvalContext, pw: dict, kind: str):
    """CE loss score (zero - spliced) / (zero - clean), or KL score 1 - KL_spliced / KL_zero,
    resampled over windows."""
    kw = dict(n_boot=ctx.cfg.n_bootstrap, level=ctx.cfg.level, seed=ctx.cfg.seed)
    if kind == "ce":
        z, s, c = (np.asarray(pw[k]) for k in ("ce_zero", "ce_spliced", "ce_clean"))
        return ratio_interval(z - s, z - c, **kw)
    return ratio_interval(np.asarray(pw["kl_spliced"]), np.asarray(pw["kl_zero"]),
                          transform=lambda r: 1 - r, **kw)


@register_suite(SUITE, needs_model=True, baselines=("random", "neurons", "pca"),
                description="reconstruction and loss recovered, with intervals")
def run(ctx: EvalContext) -> SuiteResult:
    x, y, source = _rows(ctx)
    res = SuiteResult(info={"rows": source, "n_rows": int(x.shape[0])})
    kw = dict(n_boot=ctx.cfg.n_bootstrap, level=ctx.cfg.level, seed=ctx.cfg.seed)
    subjects = ctx.subjects(("random", "neurons", "pca")) if y is None else {"sae": ctx.sae}
    for name, sub in subjects.items():
        r = per_row(sub, x, y)
        fvu = ratio_interval(r["resid"], r["var"], **kw)
        ev = ratio_interval(r["resid"], r["var"], transform=lambda v: 1 - v, **kw)
        res.add(metric_row(SUITE, "fvu", name, fvu, higher_is_better=False))
        res.add(metric_row(SUITE, "explained_variance", name, ev))
        res.add(metric_row(SUITE, "l0", name, ctx.interval(r["l0"]), higher_is_better=None))
        res.add(metric_row(SUITE, "cossim", name, ctx.interval(r["cos"])))
        if name in EXACT:
            res.add(metric_row(SUITE, "ce_loss_score", name, 1.0, note="exact reconstruction"))
            continue
        if ctx.cfg.lm_windows > 0:
            lm = _lm(ctx, sub)
            res.add(metric_row(SUITE, "ce_loss_score", name, _score_interval(ctx, lm["per_window"],
                                                                             "ce")))
            res.add(metric_row(SUITE, "kl_score", name, _score_interval(ctx, lm["per_window"],
                                                                        "kl")))
            res.info.setdefault("lm", {})[name] = {k: v for k, v in lm.items()
                                                   if k != "per_window"}
    return res
