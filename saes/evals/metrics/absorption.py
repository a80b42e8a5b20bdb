"""Suite "absorption": SAEBench's first-letter feature absorption (Chanin et al., "A is for
Absorption", arXiv 2409.14507), or the synthetic hierarchy where the model cannot spell.

On the language model: the activation at a word in a spelling prompt (`saes.evals.spelling`);
a one-vs-rest logistic probe per first letter on the raw activations is the ground truth. For
each letter whose probe reaches test F1 > 0.6, an L1-regularised probe on all latents ranks
them, k-sparse logistic probes on the top k (k = 1..10, balanced classes) give F1(k), and the
letter's main latents are the top k up to the last k whose F1 rose by more than 0.03 over the
previous one (SAEBench's feature-splitting rule; their count is `num_split_features`). Over test
words the probe gets right, `saes.evals.recovery.absorption_scores` gives SAEBench's absorption
fraction and full-absorption flag with the probe direction as the concept. The figures are means
over letters of per-letter means; intervals resample words within letters.

The suite first measures how well the model spells (its own first-letter accuracy on checked
prompts, reported as `spelling_accuracy`). Below `min_spelling_accuracy`, or with fewer than
`MIN_LETTERS` letters above the probe gate, first-letter absorption says nothing about the
dictionary, and the suite reports absorption on the synthetic hierarchy instead (labelled
`source: synthetic`).
"""

from __future__ import annotations

import numpy as np
import torch

from interp.errors import DataError
from saes.evals.context import EvalContext, encode_rows
from saes.evals.linear import f1_score, fit_logistic, fit_multi_probe
from saes.evals.recovery import absorption_scores, unit_rows
from saes.evals.registry import SuiteResult, metric_row, register_suite
from saes.evals.spelling import LETTERS, spelling_data

SUITE = "absorption"
MIN_PROBE_F1 = 0.6
MIN_LETTERS = 10
MAX_K = 10
F1_JUMP = 0.03


def split_features(f1_by_k: list[float], ranked: list[int]) -> list[int]:
    """SAEBench's rule: grow k while F1(k) > best so far + F1_JUMP; the main latents are the
    top k at the last such k."""
    best, feats = -100.0, []
    for k, f1 in enumerate(f1_by_k, start=1):
        if f1 > best + F1_JUMP:
            best, feats = f1, ranked[:k]
        else:
            break
    return feats


def letter_absorption(sae, x_train, y_train, x_test, y_test, probe_w, probe_b, letters,
                      seed: int = 0) -> dict:
    """Per test word the probe gets right: letter, absorption fraction, full absorption; and
    per letter: main latents and k-sparse F1."""
    z_tr, z_te = encode_rows(sae, x_train), encode_rows(sae, x_test)
    Y = torch.nn.functional.one_hot(y_train, 26).float()
    Wl, _ = fit_multi_probe(z_tr, Y, epochs=50, l1=0.01, seed=seed)
    W = sae.W_dec.detach().float()
    scores = x_test.float() @ probe_w.T + probe_b
    rows = {"letter": [], "word": [], "absorption_fraction": [], "full_absorption": []}
    per_letter = {}
    for L in letters:
        ranked = Wl[L].topk(min(MAX_K, Wl.shape[1])).indices.tolist()
        f1s = []
        for k in range(1, len(ranked) + 1):
            cols = ranked[:k]
            p = fit_logistic(z_tr[:, cols], (y_train == L).long(), class_weight="balanced")
            f1s.append(f1_score(p.predict(z_te[:, cols]), y_test == L))
        main = split_features(f1s, ranked)
        tp = torch.nonzero((y_test == L) & (scores[:, L] > 0)).flatten()
        per_letter[L] = {"main": main, "f1_by_k": f1s, "n_true_positives": int(len(tp))}
        if len(tp) == 0:
            continue
        p_hat = unit_rows(probe_w[L:L + 1])[0]
        frac, full, _ = absorption_scores(z_te[tp], W @ p_hat, unit_rows(W) @ p_hat,
                                          x_test[tp].float() @ p_hat, main)
        rows["letter"] += [L] * len(tp)
        rows["word"] += tp.tolist()
        rows["absorption_fraction"] += frac.tolist()
        rows["full_absorption"] += full.float().tolist()
    return {"rows": {k: np.asarray(v) for k, v in rows.items()}, "letters": per_letter}


def _fallback(ctx: EvalContext, res: SuiteResult, reason: str) -> SuiteResult:
    """Absorption on the synthetic hierarchy (the synthetic suite's rows, relabelled)."""
    from saes.evals.metrics import synthetic

    res.info.update(source="synthetic", reason=reason)
    syn = synthetic.run(ctx)
    for row in syn.rows:
        if row["metric"] in ("absorption_fraction", "full_absorption_rate"):
            res.add({**row, "suite": SUITE, "source": "synthetic"})
    res.info["synthetic"] = {k: syn.info[k] for k in ("child_rate_given_parent", "true_l0")}
    return res


@register_suite(SUITE, needs_model=True, baselines=("random", "neurons", "pca"),
                description="first-letter feature absorption (SAEBench / Chanin et al.)")
def run(ctx: EvalContext) -> SuiteResult:
    cfg = ctx.cfg
    hook = ctx.sae.cfg.hook_name
    cache = ctx.cfg.data_dir or ctx.out_dir / "data"
    try:
        sp = spelling_data(ctx.model, hook, cfg.absorption_words, cfg.spelling_prompts,
                           seed=cfg.seed, cache=cache, model_name=ctx.model_name,
                           progress=ctx.progress)
    except DataError as e:  # e.g. a character-level tokenizer has no single-token words
        return _fallback(ctx, SuiteResult(), f"no first-letter prompts for this model: {e}")
    res = SuiteResult(info={"spelling_accuracy": sp.spelling_accuracy,
                            "n_spelling_checked": int(len(sp.check_correct)),
                            "n_words": len(sp.words)})
    res.add(metric_row(SUITE, "spelling_accuracy", "model",
                       ctx.interval(sp.check_correct.double().numpy())))
    if sp.spelling_accuracy < cfg.min_spelling_accuracy:
        return _fallback(ctx, res, f"the model names the first letter on only "
                                   f"{sp.spelling_accuracy:.2f} of checked words")
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(sp.words), generator=g)
    n_tr = int(0.8 * len(order))
    tr, te = order[:n_tr], order[n_tr:]
    x_tr, x_te, y_tr, y_te = sp.acts[tr], sp.acts[te], sp.letter[tr], sp.letter[te]
    pw, pb = fit_multi_probe(x_tr, torch.nn.functional.one_hot(y_tr, 26).float(), epochs=100,
                             seed=cfg.seed)
    scores = x_te.float() @ pw.T + pb
    probe_f1 = {L: f1_score(scores[:, L] > 0, y_te == L) for L in range(26)}
    letters = [L for L, f in probe_f1.items() if f > MIN_PROBE_F1]
    res.info.update(probe_f1={LETTERS[L]: f for L, f in probe_f1.items()},
                    letters=[LETTERS[L] for L in letters], source="model")
    if len(letters) < MIN_LETTERS:
        return _fallback(ctx, res, f"only {len(letters)} letters have probe F1 > {MIN_PROBE_F1}")
    table: dict[str, list] = {k: [] for k in ("subject", "letter", "num_split_features",
                                              "k_sparse_f1_1", "mean_absorption_fraction",
                                              "full_absorption_rate", "n_true_positives")}
    for name, sub in ctx.subjects(("random", "neurons", "pca")).items():
        out = letter_absorption(sub, x_tr, y_tr, x_te, y_te, pw, pb, letters, seed=cfg.seed)
        r = out["rows"]
        if r["letter"].size:
            res.add(metric_row(SUITE, "mean_absorption_fraction", name,
                               ctx.interval(r["absorption_fraction"], strata=r["letter"]),
                               higher_is_better=False))
            res.add(metric_row(SUITE, "full_absorption_rate", name,
                               ctx.interval(r["full_absorption"], strata=r["letter"]),
                               higher_is_better=False))
        n_split = [len(v["main"]) for v in out["letters"].values()]
        res.add(metric_row(SUITE, "num_split_features", name, ctx.interval(n_split),
                           higher_is_better=None))
        res.add(metric_row(SUITE, "k_sparse_f1_1", name,
                           ctx.interval([v["f1_by_k"][0] for v in out["letters"].values()])))
        for L, v in out["letters"].items():
            m = r["letter"] == L
            table["subject"].append(name)
            table["letter"].append(LETTERS[L])
            table["num_split_features"].append(len(v["main"]))
            table["k_sparse_f1_1"].append(v["f1_by_k"][0])
            table["mean_absorption_fraction"].append(
                float(r["absorption_fraction"][m].mean()) if m.any() else float("nan"))
            table["full_absorption_rate"].append(
                float(r["full_absorption"][m].mean()) if m.any() else float("nan"))
            table["n_true_positives"].append(v["n_true_positives"])
    res.tables["letters"] = table
    return res
