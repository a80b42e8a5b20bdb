"""Suites "scr" and "tpp": SAEBench's spurious correlation removal and targeted probe
perturbation (Karvonen et al., arXiv 2503.09532; SCR after Marks et al.'s SHIFT, arXiv
2403.19647), flagged unreliable.

**Warning.** An audit of SAEBench (Chanin, "Are Sparse Autoencoder Benchmarks Reliable?", arXiv
2605.18229) finds that SCR and TPP fail several of its reliability tests at their canonical
settings (reseed noise, correlation with ground truth on synthetic SAEs, discriminability along
training): TPP scores SAEs worse the longer they train, SCR turns anti-correlated with
ground-truth quality at large top-N, and it recommends not using either to rank SAEs. It offers
no corrected version. We compute them as SAEBench defines them, at small N, with intervals, and
mark every row `unreliable`.

Both ablate latents inside the activation while keeping the dictionary's error term:
x' = x - sum_{j in S} f_j(x) d_j (for pooled windows the same holds for the pooled vectors,
the map being linear in the latents). Probes are SAEBench's (`fit_probe_sgd`) on the raw
activations.

- **TPP**: for each class i (one vs rest, balanced) a probe w_i; latent effects
  max(mean_pos - mean_neg, 0)_j * (w_i . d_j) on i's training examples; ablate the top-N;
  TPP_i = (drop of probe i's test accuracy) - (mean drop of the other classes' probes);
  the figure is the mean over classes.
- **SCR**: two binary attributes A and B; a probe trained on a biased set (A = B: only the
  (1, 1) and (0, 0) quadrants) leans on both. Ablating the top-N latents of attribute B
  (effects |mean_pos - mean_neg|_j * |w_B . d_j| on B's balanced training data) should restore
  its accuracy on A's balanced test set: SCR = (A_ablated - A_biased) / (A_oracle - A_biased),
  A_oracle being a probe trained on A alone (0 when the gap is < 0.001). Of the two directions
  (ablate B judge A / ablate A judge B) SAEBench reports the one where the biased probe does
  worse. On our corpus A = determiner vs preposition tokens and B = source code vs
  documentation.
"""

from __future__ import annotations

import numpy as np
import torch

from saes.evals.context import EvalContext
from saes.evals.linear import LinearProbe, fit_probe_sgd
from saes.evals.registry import SuiteResult, metric_row, register_suite
from saes.evals.tasks import Examples, class_means, latent_features, raw_features, token_task

WARNING = ("unreliable (arXiv 2605.18229): fails reseed-noise, ground-truth and "
           "discriminability checks at SAEBench's canonical settings; do not rank SAEs by it")


# --------------------------------------------------------------------------- shared pieces
def ablate(x: torch.Tensor, z_sel: torch.Tensor, W_sel: torch.Tensor) -> torch.Tensor:
    """x - z_S @ W_dec[S]: the activation without the selected latents' contributions."""
    return x - z_sel @ W_sel


def top_n(effects: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n largest effects, leaving out zero effects (SAEBench)."""
    nz = int((effects != 0).sum())
    k = min(n, nz)
    return effects.topk(k).indices if k else torch.zeros(0, dtype=torch.long)


def _test_latents(sae, data, tests: list[Examples]) -> list[torch.Tensor]:
    return [latent_features(sae, data, t) for t in tests]


# --------------------------------------------------------------------------- TPP
def tpp_scores(sae, data, tasks: list[Examples], probes: list[LinearProbe], ns) -> dict:
    """{n: array [classes, test rows of all tasks]} of per-example accuracy drops
    (clean correct - ablated correct) of every probe when class i's latents are ablated,
    plus the clean correctness and each row's task."""
    tests = [t.subset(~t.train) for t in tasks]
    x_test = [raw_features(data, t) for t in tests]
    z_test = _test_latents(sae, data, tests)
    W = sae.W_dec.detach().float()
    clean = [p.correct(x, t.y) for p, x, t in zip(probes, x_test, tests)]
    drops = {n: [] for n in ns}
    for task, probe in zip(tasks, probes):
        mu1, mu0 = class_means(sae, data, task, task.train)
        effects = ((mu1 - mu0).clamp_min(0) * (W @ probe.weight.float()).double()).float()
        for n in ns:
            S = top_n(effects, n)
            row = [c - pk.correct(ablate(xk, zk[:, S], W[S]), tk.y)
                   for c, pk, xk, zk, tk in zip(clean, probes, x_test, z_test, tests)]
            drops[n].append(torch.cat(row).numpy())
    owner = np.concatenate([np.full(len(t), k) for k, t in enumerate(tests)])
    return {"drops": {n: np.stack(v) for n, v in drops.items()}, "owner": owner,
            "clean": [float(c.mean()) for c in clean]}


def tpp_statistic(drops: np.ndarray, owner: np.ndarray):
    """mean_i [mean drop on i's test rows - mean over k != i of the mean drop on k's rows]."""
    m = len(np.unique(owner))

    def stat(idx: np.ndarray) -> float:
        o = owner[idx]
        means = np.stack([drops[:, idx[o == k]].mean(1) for k in range(m)], 1)  # [i, k]
        own = np.diag(means)
        others = (means.sum(1) - own) / max(1, m - 1)
        return float((own - others).mean())
    return stat


def tpp_tasks(data, n_train: int, n_test: int, seed: int) -> list[Examples]:
    """Word classes of the documentation's tokens, each against the rest."""
    test = data.test_docs(0.3, seed)
    out = []
    for c, name in enumerate(data.classes.get("word_class", ())):
        if name == "other":
            continue
        ex = token_task(data, "word_class", c, n_train, n_test, test, seed)
        if ex is not None:
            out.append(ex)
    return out


@register_suite("tpp", needs_model=True, baselines=("random", "neurons", "pca"),
                description="targeted probe perturbation (SAEBench)", warning=WARNING)
def run_tpp(ctx: EvalContext) -> SuiteResult:
    data, cfg = ctx.data(), ctx.cfg
    tasks = tpp_tasks(data, cfg.probe_train, cfg.probe_test, cfg.seed)
    res = SuiteResult(info={"warning": WARNING, "tasks": [t.name for t in tasks],
                            "top_n": list(cfg.scr_top_n)})
    if len(tasks) < 2:
        res.info["skipped"] = "fewer than two classes with enough examples"
        return res
    probes = [fit_probe_sgd(raw_features(data, t)[t.train], t.y[t.train], seed=cfg.seed)
              for t in tasks]
    for name, sub in ctx.subjects(("random", "neurons", "pca")).items():
        out = tpp_scores(sub, data, tasks, probes, cfg.scr_top_n)
        res.info.setdefault("clean_accuracy", out["clean"])
        for n, drops in out["drops"].items():
            iv = ctx.boot(tpp_statistic(drops, out["owner"]), drops.shape[1],
                          strata=out["owner"])
            res.add(metric_row("tpp", f"tpp_top_{n}", name, iv, top_n=n, unreliable=True,
                               warning=WARNING))
    return res


# --------------------------------------------------------------------------- SCR
def quadrant_sets(a: torch.Tensor, b: torch.Tensor, doc: torch.Tensor, index: torch.Tensor,
                  test: torch.Tensor, n_train: int, n_test: int, seed: int = 0,
                  level: str = "token") -> dict[str, Examples] | None:
    """SAEBench's SCR data from two 0/1 attributes: "biased" ((1,1) vs (0,0)), "A" and "B"
    (each balanced over the other attribute), each with train and test parts; None if a
    quadrant is too small."""
    from saes.evals.tasks import MIN_PER_CLASS

    g = torch.Generator().manual_seed(seed)
    sets: dict[str, list] = {"biased": [], "A": [], "B": []}
    for is_train, split, n in ((True, ~test, n_train), (False, test, n_test)):
        q = {(i, j): torch.nonzero(split & (a == i) & (b == j)).flatten()
             for i in (0, 1) for j in (0, 1)}
        m = min(min(len(v) for v in q.values()), n // 4)
        if m < MIN_PER_CLASS // 2:
            return None
        q = {k: v[torch.randperm(len(v), generator=g)] for k, v in q.items()}
        # disjoint draws: the biased set and the balanced sets use different rows
        biased = [q[1, 1][:2 * m], q[0, 0][:2 * m]]
        if min(len(v) for v in biased) < 2 * m:
            biased = [q[1, 1][:m], q[0, 0][:m]]
        sets["biased"].append((torch.cat(biased), is_train))
        sets["A"].append((torch.cat([q[1, 1][:m], q[1, 0][:m], q[0, 1][:m], q[0, 0][:m]]),
                          is_train))
        sets["B"].append((torch.cat([q[1, 1][:m], q[0, 1][:m], q[1, 0][:m], q[0, 0][:m]]),
                          is_train))
    out = {}
    for key, parts in sets.items():
        idx = torch.cat([p for p, _ in parts])
        tr = torch.cat([torch.full((len(p),), t) for p, t in parts])
        y = {"biased": a, "A": a, "B": b}[key][idx]
        out[key] = Examples(f"scr:{key}", level, index[idx], y, doc[idx], tr)
    return out


def scr_direction(sae, data, sets: dict[str, Examples], probes: dict[str, LinearProbe],
                  ablated: str, judged: str, ns) -> dict:
    """Ablate the top-N latents of attribute `ablated`; correctness of the biased probe and of
    the oracle on `judged`'s test set, before and after."""
    W = sae.W_dec.detach().float()
    src = sets[ablated]
    mu1, mu0 = class_means(sae, data, src, src.train)
    effects = ((mu1 - mu0) * (W @ probes[ablated].weight.float()).double()).abs().float()
    test = sets[judged].subset(~sets[judged].train)
    x = raw_features(data, test)
    z = latent_features(sae, data, test)
    out = {"orig": probes["biased"].correct(x, test.y).numpy(),
           "clean": probes[judged].correct(x, test.y).numpy(), "changed": {}}
    for n in ns:
        S = top_n(effects, n)
        out["changed"][n] = probes["biased"].correct(ablate(x, z[:, S], W[S]), test.y).numpy()
    return out


def scr_statistic(orig: np.ndarray, clean: np.ndarray, changed: np.ndarray):
    def stat(idx: np.ndarray) -> float:
        gap = clean[idx].mean() - orig[idx].mean()
        return 0.0 if gap < 0.001 else float((changed[idx].mean() - orig[idx].mean()) / gap)
    return stat


def scr_attributes(data) -> tuple[torch.Tensor, ...] | None:
    """(A, B, doc, flat index, window) over all labelled determiner / preposition tokens:
    A = determiner (1) vs preposition (0), B = in the source code (1) vs the docs (0)."""
    if "word_class" not in data.labels:
        return None
    classes = data.classes["word_class"]
    det, prep = classes.index("determiner"), classes.index("preposition")
    lab = data.labels["word_class"]
    T = lab.shape[1]
    mask = (lab == det) | (lab == prep)
    mask[:, 0] = False
    flat = torch.nonzero(mask.reshape(-1)).flatten()
    w = flat // T
    a = (lab.reshape(-1)[flat] == det).long()
    b = (data.source[w] == 1).long()
    return a, b, data.doc[w], flat, w


@register_suite("scr", needs_model=True, baselines=("random", "neurons", "pca"),
                description="spurious correlation removal (SAEBench)", warning=WARNING)
def run_scr(ctx: EvalContext) -> SuiteResult:
    data, cfg = ctx.data(), ctx.cfg
    res = SuiteResult(info={"warning": WARNING, "top_n": list(cfg.scr_top_n),
                            "A": "determiner vs preposition", "B": "source code vs docs"})
    attrs = scr_attributes(data)
    test = data.test_docs(0.3, cfg.seed)
    sets = None if attrs is None else quadrant_sets(
        attrs[0], attrs[1], attrs[2], attrs[3], test[attrs[4]], cfg.probe_train,
        cfg.probe_test, cfg.seed)
    if sets is None:
        res.info["skipped"] = "a quadrant of the two attributes has too few tokens"
        return res
    probes = {k: fit_probe_sgd(raw_features(data, e)[e.train], e.y[e.train], seed=cfg.seed)
              for k, e in sets.items()}
    acc = {}
    for judged in ("A", "B"):
        t = sets[judged].subset(~sets[judged].train)
        acc[judged] = float(probes["biased"].correct(raw_features(data, t), t.y).mean())
    # SAEBench: report the direction on whose attribute the biased probe is worse
    ablated, judged = ("B", "A") if acc["A"] < acc["B"] else ("A", "B")
    res.info.update(biased_accuracy=acc, direction=f"ablate {ablated}, judge {judged}")
    for name, sub in ctx.subjects(("random", "neurons", "pca")).items():
        out = scr_direction(sub, data, sets, probes, ablated, judged, cfg.scr_top_n)
        for n, changed in out["changed"].items():
            iv = ctx.boot(scr_statistic(out["orig"], out["clean"], changed), len(changed))
            res.add(metric_row("scr", f"scr_top_{n}", name, iv, top_n=n, unreliable=True,
                               warning=WARNING))
    return res
