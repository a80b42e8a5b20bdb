"""Suite "synthetic": the run's architecture trained on activations with known features.

The run's dictionary was trained on a model's activations, whose true features are unknown, so
this suite trains a dictionary of the same architecture and sparsity settings (resized:
d_in = d, d_sae = n_features, k = the true mean L0) on `saes.evals.synthetic` data and measures
it against the truth with `saes.evals.recovery`: feature recovery (Hungarian-matched cosine),
MCC, detection F1, absorption on the hierarchy and splitting, with the random decoder, PCA and
the true dictionary (the ceiling: true features as decoder, true codes as activations) beside
it. The random decoder's mean best cosine is compared
with its analytic expectation. Runs in seconds to a minute on a CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from saes.evals.baselines import pca, random_decoder
from saes.evals.bootstrap import ratio_interval
from saes.evals.context import EvalContext, encode_rows
from saes.evals.recovery import (absorption_rows, detection, expected_max_cos, feature_recovery,
                                 splitting)
from saes.evals.registry import SuiteResult, metric_row, register_suite
from saes.evals.synthetic import (SyntheticConfig, SyntheticModel, expected_l0,
                                  synthetic_sae_config, true_dictionary)

SUITE = "synthetic"


def train_synthetic(sae_cfg, model: SyntheticModel, tokens: int, run_dir: str | Path,
                    train_cfg=None, seed: int = 0, batch_size: int = 1024, progress: bool = False):
    """Train a dictionary of `sae_cfg` on fresh synthetic rows (batch i is drawn with seed
    seed * 1_000_003 + i, so a resumed run sees the same batches); returns it."""
    from saes.train import TrainConfig, Trainer

    base = train_cfg if train_cfg is not None else TrainConfig()
    tcfg = dataclasses.replace(base, sae=sae_cfg, seed=seed,
                               total_tokens=max(batch_size, tokens), batch_size=batch_size,
                               dead_tokens=min(base.dead_tokens, tokens // 4),
                               checkpoint_every=0, log_every=50)

    ck = Path(run_dir) / "checkpoint"
    if (ck / "trainer.json").is_file():  # reuse a finished run of these settings, else start over
        from saes.checkpoint import read_meta

        if read_meta(ck).get("config") != tcfg.to_dict():
            import shutil

            shutil.rmtree(run_dir)

    source = SyntheticSource(model, seed)
    return Trainer(tcfg, run_dir, source, progress=progress).train().eval()


class SyntheticSource:
    """A `saes.data.BatchSource` of fresh synthetic rows: batch i is drawn with seed
    seed * 1_000_003 + i, the same rows for every hook asked (an SAE's input and target)."""

    def __init__(self, model: SyntheticModel, seed: int):
        self.model, self.seed = model, seed

    def batches(self, hooks, batch_size, start=0, n_batches=None):
        i = start
        while True:
            x = self.model.sample(batch_size, seed=self.seed * 1_000_003 + i).x
            yield {h: x for h in dict.fromkeys(hooks)}
            i += 1

    def width(self, hook: str) -> int:
        return int(self.model.cfg.d)


def _evaluate(ctx: EvalContext, name: str, sub, test, res: SuiteResult, table: dict) -> None:
    with torch.no_grad():
        # the true dictionary is an oracle: its code is the true code (a linear encoder cannot
        # undo superposition, so encoding would measure interference, not the dictionary)
        acts = test.codes if name == "true" else encode_rows(sub, test.x)
        recon = sub.decode(acts, test.x).float()
    rec = feature_recovery(sub.W_dec, test.features)
    det = detection(acts, test.codes, rec["match"])
    ab = absorption_rows(acts, sub.W_dec, test.features, test.codes, test.parents,
                         rec["match"])
    n_split = splitting(sub.W_dec, test.features)
    resid = (test.x - recon).pow(2).sum(1).double().numpy()
    var = (test.x - test.x.mean(0)).pow(2).sum(1).double().numpy()
    fvu = ratio_interval(resid, var, n_boot=ctx.cfg.n_bootstrap, level=ctx.cfg.level,
                         seed=ctx.cfg.seed)
    add = res.add
    add(metric_row(SUITE, "recovery", name, ctx.interval(rec["matched_cos"])))
    add(metric_row(SUITE, "mcc", name, rec["mcc"]))
    add(metric_row(SUITE, "mean_max_cos", name, ctx.interval(rec["max_cos"])))
    add(metric_row(SUITE, "detection_f1", name, ctx.interval(det["f1"])))
    if ab["parent"].size:
        add(metric_row(SUITE, "absorption_fraction", name,
                       ctx.interval(ab["absorption_fraction"], strata=ab["parent"]),
                       higher_is_better=False))
        add(metric_row(SUITE, "full_absorption_rate", name,
                       ctx.interval(ab["full_absorption"].astype(float), strata=ab["parent"]),
                       higher_is_better=False))
    add(metric_row(SUITE, "splitting_rate", name, ctx.interval((n_split >= 2).astype(float)),
                   higher_is_better=False))
    add(metric_row(SUITE, "fvu", name, fvu, higher_is_better=False))
    add(metric_row(SUITE, "l0", name, ctx.interval((acts != 0).sum(1).double().numpy()),
                   higher_is_better=None))
    F = test.features.shape[0]
    table["subject"] += [name] * F
    table["feature"] += list(range(F))
    table["parent"] += test.parent.tolist()
    table["prob"] += test.probs.tolist()
    table["matched_latent"] += rec["match"].tolist()
    table["matched_cos"] += rec["matched_cos"].tolist()
    table["max_cos"] += rec["max_cos"].tolist()
    table["f1"] += det["f1"].tolist()
    table["n_split"] += n_split.tolist()


@register_suite(SUITE, needs_model=False, baselines=("random", "pca"),
                description="the architecture on synthetic data with known features")
def run(ctx: EvalContext) -> SuiteResult:
    cfg = ctx.cfg
    scfg = SyntheticConfig()
    model = SyntheticModel(scfg, seed=cfg.seed)
    test = model.sample(cfg.synthetic_rows, seed=cfg.seed + 1)
    true_l0 = expected_l0(model)
    sae_cfg = synthetic_sae_config(ctx.sae.cfg, scfg, true_l0)
    train_seed = getattr(ctx.train_cfg, "seed", 0) if ctx.train_cfg is not None else 0
    trained = train_synthetic(sae_cfg, model, cfg.synthetic_tokens,
                              ctx.out_dir / "synthetic_sae", train_cfg=ctx.train_cfg,
                              seed=train_seed, progress=ctx.progress)
    fit = model.sample(max(scfg.d * 8, 4096), seed=cfg.seed + 2).x
    subjects = {"sae": trained}
    if ctx.only is None:
        l0 = float((encode_rows(trained, fit) != 0).sum(1).double().mean())
        if "random" in cfg.baselines:
            subjects["random"] = random_decoder(sae_cfg, fit, l0, seed=cfg.seed)
        if "pca" in cfg.baselines:
            subjects["pca"] = pca(sae_cfg, fit)
        subjects["true"] = true_dictionary(model)
    res = SuiteResult()
    table: dict[str, list] = {k: [] for k in ("subject", "feature", "parent", "prob",
                                              "matched_latent", "matched_cos", "max_cos", "f1",
                                              "n_split")}
    for name, sub in subjects.items():
        _evaluate(ctx, name, sub, test, res, table)
    res.tables["features"] = table
    res.info = {"config": scfg.to_dict(), "true_l0": true_l0, "sae_config": sae_cfg.to_dict(),
                "n_test_rows": cfg.synthetic_rows, "train_tokens": cfg.synthetic_tokens,
                "random_expected_max_cos": expected_max_cos(scfg.d, scfg.n_features),
                "parents": test.parents,
                "child_rate_given_parent": float(np.mean([
                    float((test.codes[test.codes[:, p] > 0][:, test.children(p)] > 0)
                          .any(1).float().mean()) for p in test.parents]))}
    return res
