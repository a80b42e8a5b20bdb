"""Feature runs: statistics of a trained SAE / transcoder run written as a `features` run.

`features_run(sae_run, n_tokens)` loads the dictionary (an SAE run directory or a SAELens
directory), reads `n_tokens` tokens from the run's activation store or straight from the model,
and writes the Parquet tables of `saes.features.index` into `runs/features/<name>/`.
"""

from __future__ import annotations

import time
from pathlib import Path

from interp.errors import InterpError
from interp.workspace import is_done, load_run, run_context
from saes.features.index import write_feature_tables
from saes.features.stats import (FeatureStatsConfig, feature_stats, logit_effects, model_batches,
                                 store_batches, unembedding)


def load_dictionary(sae_run: str | Path):
    """(dictionary, facts) from an SAE run directory or a SAELens directory; facts holds
    hook, model, activations (a store path or "") and the path of the weights."""
    from saes.formats import load_saelens
    from saes.runs import run_data

    p = Path(sae_run)
    facts = {"activations": "", "model": "", "sae_path": str(p)}
    if (p / "run.json").is_file():
        run = load_run(p)
        if run.kind != "sae":
            raise InterpError(f"{p} is a {run.kind!r} run; feature statistics need an SAE run "
                              "(kind 'sae') or a SAELens directory.")
        sae_dir = run.artefact("sae") if "sae" in run.artefacts else p / "sae"
        data = run_data(run)
        facts["activations"], facts["model"] = data.activations, data.model
        facts["sae_path"] = str(sae_dir)
    else:
        sae_dir = p
    if not (Path(sae_dir) / "cfg.json").is_file():
        raise InterpError(f"No trained dictionary at {sae_dir} (cfg.json missing): is the SAE run "
                          "finished? (`interp resume RUN` continues it.)")
    sae = load_saelens(sae_dir)
    facts["hook"] = sae.cfg.hook_name
    facts["model"] = facts["model"] or sae.cfg.model_name
    if not facts["hook"]:
        raise InterpError(f"The dictionary at {sae_dir} does not name its hook (hook_name).")
    return sae.eval(), facts


def _pick_source(facts: dict, cfg: FeatureStatsConfig):
    """The activation store to read, or None to run the model."""
    if cfg.source == "model" or not facts["activations"]:
        if cfg.source == "store":
            raise InterpError("source='store' but the SAE run names no activation store.")
        return None
    from interp.store import ActivationStore

    path = Path(facts["activations"])
    if not (path / "manifest.json").is_file():
        if cfg.source == "store":
            raise InterpError(f"The SAE's activation store {path} is gone; use source='model'.")
        return None
    store = ActivationStore(path)
    if facts["hook"] not in store.hooks:
        return None
    enough = store.manifest["n_windows"] * store.context_size >= cfg.n_tokens
    if cfg.source == "auto" and not enough:
        return None
    facts["model"] = facts["model"] or store.manifest["config"]["model"]
    return store


def features_run(sae_run: str | Path, n_tokens: int = 65_536, name: str | None = None,
                 workspace: str | Path | None = None, out: str | Path | None = None,
                 cfg: FeatureStatsConfig | None = None, model=None, progress: bool = True):
    """Compute feature statistics of the dictionary in `sae_run` over `n_tokens` tokens and
    write a `features` run (`out`, else `<workspace>/runs/features/<name>`); returns the run."""
    import dataclasses

    cfg = dataclasses.replace(cfg or FeatureStatsConfig(), n_tokens=n_tokens)
    sae, facts = load_dictionary(sae_run)
    name = name or f"{Path(sae_run).resolve().name}"
    store = _pick_source(facts, cfg)
    config = {"sae_run": str(Path(sae_run).resolve()), **cfg.to_dict(),
              "hook": facts["hook"], "model": facts["model"],
              "data": str(store.path) if store is not None else "model"}
    t0 = time.perf_counter()
    with run_context("features", name, config, root=workspace, path=out) as run:
        from interp.devices import resolve_device

        where = resolve_device(cfg.device)
        sae = sae.to(where)
        if model is None:
            from interp.models.loading import load_model

            model = load_model(facts["model"] or None, device=where, dtype=cfg.dtype)
        if store is not None:
            batches = store_batches(store, facts["hook"], cfg)
        else:
            batches = model_batches(model, facts["hook"], cfg)
        stats = feature_stats(sae, batches, cfg, progress=progress, total=cfg.n_tokens)
        logits = None
        W_U, gain, centre = unembedding(model)
        if sae.W_dec.shape[1] == W_U.shape[1]:
            logits = logit_effects(sae.W_dec.detach().to(W_U.device), W_U, gain, centre,
                                   k=cfg.logit_k)
            logits = tuple(t.cpu() for t in logits)
        vocab = [model.tokenizer.decode([i]) for i in range(W_U.shape[0])]
        meta = {"hook": facts["hook"], "model": facts["model"], "sae_path": facts["sae_path"],
                "config": cfg.to_dict(), "hist_edges_log10": cfg.hist_edges(),
                "logit_effects": logits is not None}
        artefacts = write_feature_tables(run.path, stats, vocab, meta, logits)
        dens = stats["density"]
        metrics = {"n_tokens": int(stats["n_tokens"]), "d_sae": int(len(dens)),
                   "dead_frac": float((stats["count"] == 0).mean()),
                   "dense_frac": float((dens > 0.1).mean()),
                   "median_density": float(sorted(dens)[len(dens) // 2]),
                   "seconds": round(time.perf_counter() - t0, 1)}
        run.finish(metrics=metrics, artefacts=artefacts)
    return run


def demo_step(workspace: Path, echo=print, n_tokens: int = 16_384, device: str = "auto") -> Path:
    """Demo: feature statistics of the demo SAE (`runs/sae/demo-topk-resid15`) over its store;
    skipped when done. Returns the features run directory."""
    from interp.workspace import run_dir

    workspace = Path(workspace)
    path = run_dir("features", "demo-topk-resid15", workspace)
    if is_done(path):
        echo(f"features: already computed in {path}")
        return path
    sae_run = run_dir("sae", "demo-topk-resid15", workspace)
    echo(f"features: statistics of {sae_run.name} over {n_tokens} tokens (density, top contexts, "
         "logit effects)")
    features_run(sae_run, n_tokens, name="demo-topk-resid15", workspace=workspace,
                 cfg=FeatureStatsConfig(device=device))
    return path
