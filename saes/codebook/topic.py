"""Steering the default language model by codes on a CPU (Codebook Features, arXiv 2310.17230:
section 2.1 the bottleneck, section 4 code search, section 5 topic steering).

The paper fine-tunes its language models with codebooks at every layer's attention heads and
then steers generation by writing a topic's code into the last of the k slots at every position.
A CPU cannot fine-tune the default model (SmolLM2-135M) that far, and codebooks fitted to the
frozen model's heads do not steer it: one head's output is too small a part of the computation
(measured: the three best "object" codes of layer 8's heads, 0.00 -> 0.00; see docs/codebooks.md).

What steers the frozen model is one codebook on a middle layer's residual stream (the paper's
code offers this position as `transformer_block`; its experiments quantise heads and MLPs), on
LayerNorm(x) with x's scale restored (`CodebookConfig.denormalise`) and few active codes (k=8
by default), so one code carries an eighth of the state. `topic_steer_run` fits it by k-means on the model's
own activations in one pass over the corpus (the same activations give every window's codes),
picks the code(s) of a topic with the paper's regex code search (precision, recall) and measures
the paper's metric: the share of sampled continuations matching the topic's regex with the code
in the last slot at every position, against the same samples without it (and the model without
codebooks).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.config import Config
from interp.errors import ConfigError, InterpError
from saes.codebook.bottleneck import CodebookConfig
from saes.codebook.insert import CodebookModel, insert_codebooks
from saes.codebook.stats import CodeTable, code_counts

DEFAULT_PROMPTS = ("The", "Once upon a time,", "I think that")


@dataclass(frozen=True)
class TopicSteerConfig(Config):
    """A residual-stream codebook on a frozen model, and the topic to steer towards."""

    model: str | None = None  # None: the default model
    hook: str = "blocks.12.hook_resid_post"
    n_codes: int = 4096
    k: int = 8
    kmeans_iters: int = 5
    corpus: str = "cpython"
    context_size: int = 64
    windows: int = 512  # corpus windows the codes are fitted and searched on
    eval_windows: int = 8  # held-out windows for the loss with / without codebooks
    pattern: str = r"\bobjects?\b"  # the topic: a case-insensitive regex
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    n: int = 16  # continuations per prompt
    max_new_tokens: int = 20
    top_codes: int = 1  # codes activated (the best by the code search)
    slots: int = 1  # slots of the k each code takes (1: the paper)
    min_precision: float = 0.5  # code search thresholds (paper: precision > 0.5,
    min_recall: float = 0.01  # recall > 0.01)
    seed: int = 0
    device: str = "auto"  # where the model and its codebook run (interp.devices)
    dtype: str = "float32"  # the model's compute dtype

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "device", check_device(self.device))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))
        if self.windows < 1 or self.eval_windows < 1 or self.n < 1 or self.max_new_tokens < 1:
            raise ConfigError("windows, eval_windows, n and max_new_tokens must be >= 1.")
        if self.top_codes < 1 or self.slots < 1 or self.top_codes * self.slots > self.k:
            raise ConfigError(f"top_codes x slots ({self.top_codes} x {self.slots}) must fit in "
                              f"the k={self.k} slots (and both be >= 1).")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ConfigError(f"pattern {self.pattern!r} is not a regular expression: {e}") from e
        object.__setattr__(self, "prompts", tuple(self.prompts))

    def codebook(self) -> CodebookConfig:
        return CodebookConfig(n_codes=self.n_codes, k=self.k, layer_norm=True, denormalise=True,
                              seed=self.seed)


@torch.no_grad()
def fit_codebook(model, hook: str, windows: torch.Tensor, cfg: CodebookConfig,
                 kmeans_iters: int = 5, batch_size: int = 16, seed: int = 0,
                 progress: bool = True) -> tuple[CodebookModel, CodeTable]:
    """One codebook at `hook` of a frozen model, k-means-fitted to the hook's activations on
    `windows` ([n, pos] ids), with the codes of every window computed from the same activations
    (one pass of the model, stopped after the hook's layer). Firing counts are filled in."""
    cb = insert_codebooks(model, [hook], cfg)
    layer = cb.layer(hook)
    heads = bool(model.hook_points[hook].heads)
    stop = model.stop_layer_for([hook])
    acts = []
    for batch in tqdm(windows.split(batch_size), desc=f"activations {hook}", disable=not progress):
        _, cache = model.run_with_cache(batch, hooks=[hook], stop_at_layer=stop)
        a = cache[hook].float().cpu()
        acts.append(a if heads else a.unsqueeze(-2))
    x = torch.cat(acts)  # [n, pos, groups, d]
    layer.init_from_data(x.reshape(-1, layer.groups, layer.d), kmeans_iters,
                         torch.Generator().manual_seed(seed))
    ids = torch.cat([layer.encode(part) for part in x.split(64)]).to(torch.int32)
    table = CodeTable(windows.cpu(), {hook: ids})
    layer.counts.copy_(code_counts(table, hook, layer.cfg.n_codes))
    return cb, table


def choose_codes(table: CodeTable, tokenizer, cfg: TopicSteerConfig) -> list[dict]:
    """The paper's code search for the topic pattern: the `top_codes` codes by precision."""
    from saes.codebook.stats import code_search

    found = code_search(table, tokenizer, cfg.pattern, hook=cfg.hook, top=cfg.top_codes,
                        min_recall=cfg.min_recall, min_precision=cfg.min_precision)
    if not found:
        raise InterpError(f"No code at {cfg.hook} fires on {cfg.pattern!r} with precision > "
                          f"{cfg.min_precision} and recall > {cfg.min_recall} in {cfg.windows} "
                          "windows: use a word frequent in the corpus, more windows or codes, "
                          "or lower min_precision.")
    return found


def steering_code_stats(cb: CodebookModel, table: CodeTable, tokenizer, found: list[dict]) -> dict:
    """`code_stats.json`: usage at the hook (most used codes) plus the steering codes' search
    scores, tokens and contexts."""
    from saes.codebook.runs import code_stats
    from saes.codebook.stats import code_tokens, top_contexts

    stats = code_stats(cb, table, tokenizer)
    for r in found:
        h, g, c = r["hook"], r["group"], r["code"]
        stats[h].setdefault("steering_codes", []).append(
            {**r, "tokens": code_tokens(table, tokenizer, h, c, g, 8),
             "contexts": top_contexts(table, tokenizer, h, c, g, 5)})
    return stats


def topic_steer_run(cfg: TopicSteerConfig, workspace=None, name: str = "steer-default",
                    path=None, model=None, progress: bool = True):
    """Fit the residual codebook, find the topic's codes, steer generation; a `codebook` run
    with `codebooks.safetensors`, `code_stats.json` and `steering.json`."""
    from interp.io import atomic_write_json
    from interp.models.loading import load_model
    from interp.workspace import run_context
    from saes.codebook.runs import KIND, TrainRunConfig, corpus_windows, evaluate_lm
    from saes.codebook.steer import topic_steering

    with run_context(KIND, name, {"mode": "topic-steer", **cfg.to_dict()}, root=workspace,
                     path=path) as run:
        t0 = time.perf_counter()
        model = model if model is not None else load_model(cfg.model, device=cfg.device,
                                                           dtype=cfg.dtype)
        model.validate_hooks([cfg.hook])
        windows = corpus_windows(model, TrainRunConfig(corpus=cfg.corpus,
                                                 context_size=cfg.context_size),
                           cfg.windows + cfg.eval_windows)
        if len(windows) <= cfg.eval_windows:
            raise InterpError(f"The corpus gave only {len(windows)} windows of "
                              f"{cfg.context_size} tokens; lower eval_windows or context_size.")
        held_out, fit = windows[: cfg.eval_windows], windows[cfg.eval_windows:]
        cb, table = fit_codebook(model, cfg.hook, fit, cfg.codebook(), cfg.kmeans_iters,
                                 seed=cfg.seed, progress=progress)
        fit_s = time.perf_counter() - t0
        metrics = evaluate_lm(cb, held_out)
        found = choose_codes(table, model.tokenizer, cfg)
        codes = [(r["hook"], r["group"], r["code"]) for r in found]
        res = topic_steering(cb, codes, cfg.pattern, cfg.prompts, n=cfg.n,
                             max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, slots=cfg.slots,
                             plain_baseline=True)
        res["search"] = found
        cb.save(run.path)
        atomic_write_json(run.path / "code_stats.json",
                          steering_code_stats(cb, table, model.tokenizer, found))
        atomic_write_json(run.path / "steering.json", res)
        metrics.update(baseline_share=res["baseline_share"], steered_share=res["steered_share"],
                       model_share=res["model_share"], codes=[list(c) for c in codes],
                       code_precision=found[0]["precision"], code_recall=found[0]["recall"],
                       fit_seconds=round(fit_s, 1),
                       seconds=round(time.perf_counter() - t0, 1))
        run.finish(metrics=metrics, artefacts={
            "codebooks": "codebooks.safetensors", "codebooks_config": "codebooks.json",
            "code_stats": "code_stats.json", "steering": "steering.json"})
    return run, res


DEMO_HOOK = "blocks.12.hook_resid_post"


def demo_config():
    """The demo's (and the quick notebook's) topic steering: 2048 codes fitted on 192 windows."""
    return TopicSteerConfig(hook=DEMO_HOOK, n_codes=2048, windows=192, n=8, max_new_tokens=16)


def demo_step(workspace: Path, echo=print, device: str = "auto") -> Path:
    """The demo: one codebook (2048 codes, k=8) on the default model's layer-12 residual stream,
    fitted by k-means; the paper's code search picks the code of "object(s)", activated in the
    last slot at every position while sampling (share of continuations mentioning it, against
    the same samples without the code). Skipped when its run is done."""
    from interp.workspace import is_done, run_dir
    from saes.codebook.runs import KIND

    workspace = Path(workspace)
    path = run_dir(KIND, "demo-steer", workspace)
    if is_done(path):
        echo(f"codebook: already done in {path}")
        return path
    import dataclasses

    t0 = time.perf_counter()
    cfg = dataclasses.replace(demo_config(), device=device)
    echo(f"codebook: fitting {cfg.n_codes} codes (k={cfg.k}) at {cfg.hook} of the default "
         f"model, then steering towards '{cfg.pattern}'")
    run, res = topic_steer_run(cfg, workspace, "demo-steer", progress=False)
    echo(f"codebook: ΔCE {run.metrics['delta_ce']:+.2f} nats; share of continuations matching "
         f"'{cfg.pattern}': {res['baseline_share']:.2f} -> {res['steered_share']:.2f} with code "
         f"{res['codes'][0][2]} ({time.perf_counter() - t0:.0f} s)")
    return run.path
