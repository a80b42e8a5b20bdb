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

DEMO_HOOKS = ("blocks.15.hook_resid_post",)


def _done(path: Path) -> bool:
    try:
        return load_run(path).status == "done"
    except Exception:
        return False


def run_demo(workspace: Path, tokens: int = 32_768, echo=print) -> dict:
    """Cache activations of the default model; return {step: run path}."""
    from interp.cli import summary

    workspace = Path(workspace)
    steps: dict[str, Path] = {}
    config = StoreConfig(hooks=DEMO_HOOKS, n_tokens=tokens)
    path = run_dir("activations", "demo-resid15", workspace)
    if _done(path):
        echo(f"[1/1] activations: already cached in {path}")
    else:
        echo(f"[1/1] caching {tokens} tokens of {config.corpus.source!r} text at {DEMO_HOOKS} "
             "with the default model (first run converts the model once, ~30 s)")
        t0 = time.perf_counter()
        with run_context("activations", "demo-resid15", config.to_dict(), root=workspace) as run:
            store = cache_activations(run.path, config)
            metrics = summary(store)
            metrics["seconds"] = round(time.perf_counter() - t0, 1)
            metrics["tokens_per_s"] = round(store.manifest["n_tokens_seen"] / metrics["seconds"])
            run.finish(metrics=metrics, artefacts={"manifest": "manifest.json"})
    steps["activations"] = path
    echo(json.dumps(load_run(path).metrics, indent=2))
    echo("")
    echo(f"Workspace: {workspace.resolve()} ({len(list_runs(workspace))} runs)")
    echo("Open the store in Python:")
    echo(f"  from interp.store import ActivationStore; s = ActivationStore({str(path)!r})")
    echo("The Streamlit explorer (`interp app workspace`) is not built yet (issue 5); its runs "
         "will be read from this workspace.")
    return steps
