"""Suite "autointerp": explanations from top contexts, scored by detection and fuzzing
(Delphi: Paulo et al., "Automatically Interpreting Millions of Features in Large Language
Models", arXiv 2410.13928; SAEBench's autointerp is the detection variant), offline.

For each of `autointerp_latents` latents (sampled with a seed among latents active in enough
windows) the explainer sees its top activating contexts (activating tokens marked << >>) and
writes a short explanation. The scorer then judges held-out examples one at a time:

- detection: activating contexts (spread over the activation quantiles) and as many random
  contexts where the latent is silent; "does the feature fire on this text?";
- fuzzing: the activating contexts with their activating tokens marked, and silent contexts
  with the same number of tokens marked at positions borrowed from an activating example;
  "are the marked tokens ones the feature fires on?".

The scorer's P("1") gives a prediction (> 0.5) and an AUROC; per latent the figures are the
balanced accuracy and the AUROC, averaged over latents with intervals over latents. Without a
local explainer (`explainer=""`) the default model stands in and every row says so
(`placeholder`); the random-decoder baseline (arXiv 2602.14111 finds random dictionaries score
close to trained ones) is scored the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from interp.models.loading import DEFAULT_MODEL
from saes.evals.context import EvalContext, encode_rows
from saes.evals.explainer import LocalLM
from saes.evals.registry import SuiteResult, metric_row, register_suite

SUITE = "autointerp"
LEFT, RIGHT = 10, 3  # context shown around an example's peak token
N_EXPLAIN = 8  # top contexts shown to the explainer
PLACEHOLDER = ("offline placeholder explainer/scorer (the default 135M model): tests the "
               "pipeline, not comparable with SAEBench's gpt-4o-mini scores")

ANSWER_START = "The feature fires on"
EXPLAIN_SYSTEM = ("We study a feature of a language model. Each text below shows where it "
                  "fires, with the tokens it fires on marked << >>. In one short phrase, say "
                  "what the feature fires on.")
DETECT_SYSTEM = ("A feature of a language model is described below. Decide whether it fires "
                 "anywhere in the text. Answer 1 for yes or 0 for no.")
FUZZ_SYSTEM = ("A feature of a language model is described below. In the text, some tokens are "
               "marked << >>. Decide whether the marked tokens are ones the feature fires on. "
               "Answer 1 for yes or 0 for no.")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    from scipy.stats import rankdata

    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return float("nan")
    r = rankdata(scores)
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def render(strs: list[str], marked: list[bool] | None = None) -> str:
    out = "".join(f"<<{s}>>" if marked is not None and m else s
                  for s, m in zip(strs, marked or [False] * len(strs)))
    return out.replace("\n", "\\n")


def latent_windows(sub, data, latents: torch.Tensor) -> torch.Tensor:
    """[W, T] activations of the chosen latents ([L, W, T]; BOS set to 0)."""
    W, T, d = data.acts.shape
    out = torch.zeros(len(latents), W, T)
    for i in range(0, W, 32):
        z = encode_rows(sub, data.acts[i:i + 32].reshape(-1, d))[:, latents]
        out[:, i:i + 32] = z.T.reshape(len(latents), -1, T)
    out[:, :, 0] = 0
    return out


def choose_latents(sub, data, n: int, need: int, seed: int) -> torch.Tensor:
    """`n` latents (seeded) among those active in at least `need` windows."""
    W, T, d = data.acts.shape
    counts = torch.zeros(sub.cfg.d_sae)
    for i in range(0, W, 32):
        z = encode_rows(sub, data.acts[i:i + 32, 1:].reshape(-1, d))
        counts += (z.view(-1, T - 1, z.shape[-1]) > 0).any(1).sum(0)
    alive = torch.nonzero(counts >= need).flatten()
    g = torch.Generator().manual_seed(seed)
    return alive[torch.randperm(len(alive), generator=g)[:n]].sort().values


def _slice(acts: torch.Tensor, w: int, pos: int) -> tuple[int, int]:
    T = acts.shape[-1]
    a = max(1, pos - LEFT)
    return a, min(T, a + LEFT + RIGHT + 1)


def examples_for(acts: torch.Tensor, n_ex: int, rng: np.random.Generator) -> dict | None:
    """Explanation windows, scoring windows (activating, silent) and their slices, for one
    latent's [W, T] activations."""
    peak, where = acts.max(1)
    active = torch.nonzero(peak > 0).flatten()
    silent = torch.nonzero(peak <= 0).flatten()
    if len(active) < N_EXPLAIN + n_ex or len(silent) < n_ex:
        return None
    ranked = active[peak[active].argsort(descending=True)]
    explain, rest = ranked[:N_EXPLAIN], ranked[N_EXPLAIN:]
    picks = np.linspace(0, len(rest) - 1, n_ex).round().astype(int)  # across quantiles
    scoring = rest[picks]
    quiet = silent[torch.as_tensor(rng.choice(len(silent), n_ex, replace=False))]
    quiet_pos = torch.as_tensor(rng.integers(1, acts.shape[1], n_ex))
    return {"explain": [(int(w), int(where[w])) for w in explain],
            "active": [(int(w), int(where[w])) for w in scoring],
            "silent": [(int(w), int(p)) for w, p in zip(quiet, quiet_pos)]}


def score_latent(lm: LocalLM, data, acts: torch.Tensor, ex: dict, explanation: str,
                 rng: np.random.Generator) -> dict:
    """Detection and fuzzing of one latent's explanation."""
    tok = lm.tokenizer
    strs = lambda w, a, b: [tok.decode([int(t)]) for t in data.tokens[w, a:b]]  # noqa: E731
    det_prompts, fuzz_prompts, labels = [], [], []
    marks = []
    for w, p in ex["active"]:
        a, b = _slice(acts, w, p)
        m = (acts[w, a:b] > 0).tolist()
        marks.append(m)
        det_prompts.append(render(strs(w, a, b)))
        fuzz_prompts.append(render(strs(w, a, b), m))
        labels.append(1)
    for w, p in ex["silent"]:
        a, b = _slice(acts, w, p)
        borrowed = marks[rng.integers(len(marks))]
        m = (borrowed + [False] * (b - a))[: b - a]
        det_prompts.append(render(strs(w, a, b)))
        fuzz_prompts.append(render(strs(w, a, b), m))
        labels.append(0)
    det = _judge(lm, DETECT_SYSTEM, explanation, det_prompts)
    fuzz = _judge(lm, FUZZ_SYSTEM, explanation, fuzz_prompts)
    y = np.asarray(labels)

    def bal_acc(p):
        pred = p > 0.5
        return float(((pred[y == 1]).mean() + (~pred[y == 0]).mean()) / 2)
    return {"detection_accuracy": bal_acc(det), "detection_auroc": auroc(det, y),
            "fuzzing_accuracy": bal_acc(fuzz), "fuzzing_auroc": auroc(fuzz, y)}


def _judge(lm: LocalLM, system: str, explanation: str, texts: list[str]) -> np.ndarray:
    """The scorer's P("1") for each text; the instructions and the explanation (everything up
    to the text) are run once and cached."""
    marker = "\x00TEXT\x00"
    full = lm.format(system, f"Feature: {explanation}\nText: {marker}")
    prefix, tail = full.split(marker)
    return lm.p_yes_shared(prefix, [t + tail for t in texts]).numpy()


def explain(lm: LocalLM, data, acts: torch.Tensor, ex: dict) -> str:
    tok = lm.tokenizer
    lines = []
    for i, (w, p) in enumerate(ex["explain"], 1):
        a, b = _slice(acts, w, p)
        strs = [tok.decode([int(t)]) for t in data.tokens[w, a:b]]
        lines.append(f"{i}. {render(strs, (acts[w, a:b] > 0).tolist())}")
    # the answer is started for the explainer, so a small model completes a phrase instead of
    # echoing the examples
    prompt = lm.format(EXPLAIN_SYSTEM, "\n".join(lines)) + ANSWER_START
    text = lm.generate([prompt], max_new_tokens=16)[0]
    text = text.strip().splitlines()[0] if text.strip() else ""
    return text.strip(" .:") or "(no explanation)"


@register_suite(SUITE, needs_model=True, baselines=("random",),
                description="explanations scored by detection and fuzzing (Delphi), offline")
def run(ctx: EvalContext) -> SuiteResult:
    cfg = ctx.cfg
    data = ctx.data()
    if cfg.explainer:
        explainer = LocalLM.load(cfg.explainer, device=cfg.device)
    else:  # the default model, reusing the loaded one when the run is on it
        model = ctx.model()
        explainer = (LocalLM.from_hooked(model) if model.name == DEFAULT_MODEL
                     else LocalLM.load(None, device=cfg.device))
    scorer = explainer if not cfg.scorer or cfg.scorer == cfg.explainer else LocalLM.load(
        cfg.scorer, device=cfg.device)
    placeholder = explainer.placeholder or scorer.placeholder
    note = PLACEHOLDER if placeholder else None
    res = SuiteResult(info={"explainer": explainer.name, "scorer": scorer.name,
                            "placeholder": placeholder, "note": note})
    table: dict[str, list] = {k: [] for k in ("subject", "latent", "explanation",
                                              "detection_accuracy", "detection_auroc",
                                              "fuzzing_accuracy", "fuzzing_auroc")}
    n_ex = cfg.autointerp_examples
    for name, sub in ctx.subjects(("random",)).items():
        rng = np.random.default_rng(cfg.seed)
        latents = choose_latents(sub, data, cfg.autointerp_latents, N_EXPLAIN + n_ex, cfg.seed)
        acts = latent_windows(sub, data, latents)
        scores = []
        for j, lat in enumerate(latents.tolist()):
            ex = examples_for(acts[j], n_ex, rng)
            if ex is None:
                continue
            text = explain(explainer, data, acts[j], ex)
            s = score_latent(scorer, data, acts[j], ex, text, rng)
            scores.append(s)
            table["subject"].append(name)
            table["latent"].append(lat)
            table["explanation"].append(text)
            for k, v in s.items():
                table[k].append(v)
        for metric in ("detection_accuracy", "detection_auroc", "fuzzing_accuracy",
                       "fuzzing_auroc"):
            vals = [s[metric] for s in scores if np.isfinite(s[metric])]
            if vals:
                res.add(metric_row(SUITE, metric, name, ctx.interval(vals),
                                   placeholder=placeholder, note=note))
        res.info.setdefault("n_scored", {})[name] = len(scores)
    res.tables["latents"] = table
    return res
