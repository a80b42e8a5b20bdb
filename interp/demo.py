"""The main job (`make demo`): the whole story on the default model and corpus.

Each step writes a run into the workspace and is skipped when its run is already done, so a
second `make demo` reuses finished work. Later capabilities add their steps here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from interp.store import StoreConfig, cache_activations
from interp.workspace import list_runs, load_run, run_context, run_dir

DEMO_HOOK = "blocks.15.hook_resid_post"


def _done(path: Path) -> bool:
    try:
        return load_run(path).status == "done"
    except Exception:
        return False


def _cache_step(workspace: Path, tokens: int, echo) -> Path:
    from interp.cli import summary

    config = StoreConfig(hooks=(DEMO_HOOK,), n_tokens=tokens)
    path = run_dir("activations", "demo-resid15", workspace)
    if _done(path):
        echo(f"activations: already cached in {path}")
        return path
    echo(f"activations: caching {tokens} tokens of {config.corpus.source!r} text at {DEMO_HOOK} "
         "with the default model (the first run converts the model once, ~30 s)")
    t0 = time.perf_counter()
    with run_context("activations", "demo-resid15", config.to_dict(), root=workspace) as run:
        store = cache_activations(run.path, config)
        metrics = summary(store)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        metrics["tokens_per_s"] = round(store.manifest["n_tokens_seen"] / metrics["seconds"])
        run.finish(metrics=metrics, artefacts={"manifest": "manifest.json"})
    return path


def _sae_step(workspace: Path, store_path: Path, sae_tokens: int, echo) -> Path:
    from saes.base import SAEConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    path = run_dir("sae", "demo-topk-resid15", workspace)
    if _done(path):
        echo(f"sae: already trained in {path}")
        return path
    echo(f"sae: training a top-k SAE (k=32, 4608 latents) on {sae_tokens} activation vectors")
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=576, d_sae=4608, k=32,
                                    hook_name=DEMO_HOOK, model_name="SmolLM2-135M-Instruct"),
                      activations=str(store_path), total_tokens=sae_tokens, batch_size=4096)
    train_run(cfg, path, "demo-topk-resid15")
    return path


def run_demo(workspace: Path, tokens: int = 131_072, sae_tokens: int = 1_048_576,
             echo=print) -> dict:
    """Cache activations of the default model, train an SAE on them; return {step: run path}."""
    workspace = Path(workspace)
    steps: dict[str, Path] = {}
    steps["activations"] = _cache_step(workspace, tokens, echo)
    steps["sae"] = _sae_step(workspace, steps["activations"], sae_tokens, echo)
    echo("")
    for kind, path in steps.items():
        metrics = load_run(path).metrics
        echo(f"{kind}: {path}")
        echo("  " + json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}))
    echo("")
    echo(f"Workspace: {workspace.resolve()} ({len(list_runs(workspace))} runs)")
    echo("Load the results in Python:")
    echo(f"  from interp.store import ActivationStore; s = ActivationStore({str(steps['activations'])!r})")
    echo(f"  from saes.formats import load_saelens; sae = load_saelens({str(steps['sae'] / 'sae')!r})")
    echo("The Streamlit explorer (`interp app workspace`) is not built yet (issue 5); it will "
         "read this workspace.")
    return steps
