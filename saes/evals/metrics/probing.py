"""Suite "probing": SAEBench's sparse probing on offline tasks (Gao et al., arXiv 2406.04093;
Karvonen et al., SAEBench, arXiv 2503.09532).

For every binary task, the k latents with the largest |mean over positives - mean over negatives|
on the training examples are selected and a logistic regression (L2, C = 1, as scikit-learn's
default) is fitted on them alone; the figure is its test accuracy, for k = 1, 2, 5, 10, 20, then
averaged over tasks. A logistic probe on the whole activation vector is the ceiling (subject
"model", all d dimensions). Tasks are built offline: token-level classes of the labelling tasks
in `probes.labels` (is a digit, inside a string literal, closed word classes, sentiment words),
each against the rest, and one sequence-level task (documentation vs source code windows,
mean-pooled). The interval resamples test examples within each task, by document (cluster
bootstrap), with the fitted probes held fixed.
"""

from __future__ import annotations

import numpy as np

from saes.evals.context import EvalContext
from saes.evals.linear import fit_logistic
from saes.evals.registry import SuiteResult, metric_row, register_suite
from saes.evals.tasks import (Examples, class_means, latent_features, raw_features, source_task,
                              token_task)

SUITE = "probing"
#: classes that are "the rest" in their task, not a concept to probe for
_REST = {"other", "neutral", "code", "O"}


def probing_tasks(data, n_train: int, n_test: int, seed: int = 0) -> list[Examples]:
    """The balanced binary tasks (those with enough examples of both classes)."""
    test = data.test_docs(0.3, seed)
    out = []
    for task, classes in data.classes.items():
        for c, name in enumerate(classes):
            if name in _REST:
                continue
            ex = token_task(data, task, c, n_train, n_test, test, seed)
            if ex is not None:
                out.append(ex)
    ex = source_task(data, n_train, n_test, test, seed)
    if ex is not None:
        out.append(ex)
    return out


def sparse_probe(sae, data, ex: Examples, ks) -> dict[int, np.ndarray]:
    """k -> 0/1 correctness of the k-latent probe on each test example."""
    tr = ex.train
    mu1, mu0 = class_means(sae, data, ex, tr)
    kmax = min(max(ks), sae.cfg.d_sae)
    order = (mu1 - mu0).abs().argsort(descending=True, stable=True)[:kmax]
    z = latent_features(sae, data, ex, cols=order)
    out = {}
    for k in ks:
        if k > sae.cfg.d_sae:
            continue
        zk = z[:, :k]
        probe = fit_logistic(zk[tr], ex.y[tr])
        out[k] = probe.correct(zk[~tr], ex.y[~tr]).numpy()
    return out


def dense_probe(data, ex: Examples) -> np.ndarray:
    x = raw_features(data, ex)
    mu = x[ex.train].mean(0)
    sd = x[ex.train].std(0).clamp_min(1e-6)  # standardised: L-BFGS on raw residuals is slow
    z = (x - mu) / sd
    probe = fit_logistic(z[ex.train], ex.y[ex.train])
    return probe.correct(z[~ex.train], ex.y[~ex.train]).numpy()


@register_suite(SUITE, needs_model=True, baselines=("random", "neurons", "pca"),
                description="k-sparse probing (SAEBench) on offline tasks")
def run(ctx: EvalContext) -> SuiteResult:
    data = ctx.data()
    cfg = ctx.cfg
    tasks = probing_tasks(data, cfg.probe_train, cfg.probe_test, cfg.seed)
    res = SuiteResult(info={"tasks": [t.name for t in tasks], "ks": list(cfg.probe_ks),
                            "n_examples": {t.name: len(t) for t in tasks}})
    table: dict[str, list] = {k: [] for k in ("task", "subject", "k", "accuracy", "n_test")}
    strata = np.concatenate([np.full(int((~t.train).sum()), i) for i, t in enumerate(tasks)])
    groups = np.concatenate([t.doc[~t.train].numpy() + 10**7 * i for i, t in enumerate(tasks)])

    def add(subject: str, k, metric: str, correct: list[np.ndarray]):
        v = np.concatenate(correct)
        res.add(metric_row(SUITE, metric, subject, ctx.interval(v, strata=strata, groups=groups),
                           k=k))
        for t, c in zip(tasks, correct):
            table["task"].append(t.name)
            table["subject"].append(subject)
            table["k"].append(-1 if k is None else k)
            table["accuracy"].append(float(c.mean()))
            table["n_test"].append(len(c))

    add("model", None, "dense_accuracy", [dense_probe(data, t) for t in tasks])
    for name, sub in ctx.subjects(("random", "neurons", "pca")).items():
        per_task = [sparse_probe(sub, data, t, cfg.probe_ks) for t in tasks]
        for k in cfg.probe_ks:
            if all(k in p for p in per_task):
                add(name, k, f"top_{k}_accuracy", [p[k] for p in per_task])
    res.tables["tasks"] = table
    return res

