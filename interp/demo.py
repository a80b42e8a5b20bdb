"""The main job (`make demo`): the whole story on the default model and corpus.

Each step writes a run into the workspace and is skipped when its run is already done, so a
second `make demo` reuses finished work. The steps are the table `interp.commands.DEMO_STEPS`:
a capability adds its `demo_step(workspace: Path, echo) -> Path` with one line there. The demo
ends by printing the command that opens the explorer on the workspace.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from interp.commands import DEMO_STEPS, DemoStep
from interp.store import StoreConfig
from interp.workspace import is_done, list_runs, load_run, run_dir

DEMO_HOOK = "blocks.15.hook_resid_post"
DEMO_STORE = "demo-resid15"  # runs/activations/<this>: the store the later steps read
DEMO_SAE = "demo-topk-resid15"  # runs/sae/<this>: the SAE the later steps analyse


def demo_store_path(workspace: Path) -> Path:
    return run_dir("activations", DEMO_STORE, workspace)


def demo_sae_path(workspace: Path) -> Path:
    return run_dir("sae", DEMO_SAE, workspace)


def resolve_step(step: DemoStep):
    """The function a step names (imported now, so a missing module fails here)."""
    module, _, func = step.target.partition(":")
    return getattr(importlib.import_module(module), func)


def cache_step(workspace: Path, echo=print, tokens: int = 131_072, device: str = "auto") -> Path:
    """Cache `tokens` tokens of the default model's layer-15 residual stream."""
    from interp.caching import cache_run

    config = StoreConfig(hooks=(DEMO_HOOK,), n_tokens=tokens, device=device)
    path = demo_store_path(workspace)
    if is_done(path):
        echo(f"activations: already cached in {path}")
        return path
    echo(f"activations: caching {tokens} tokens of {config.corpus.source!r} text at {DEMO_HOOK} "
         "with the default model (the first run converts the model once, ~30 s)")
    cache_run(config, DEMO_STORE, workspace=workspace)
    return path


def run_demo(workspace: Path, tokens: int = 131_072, sae_tokens: int = 1_048_576,
             echo=print, steps: list[DemoStep] | None = None, device: str = "auto") -> dict:
    """Run every step of `DEMO_STEPS` (or `steps`) in order; return {step: run path}.

    A required step that fails stops the demo (its error propagates); any other failing step is
    reported and the demo goes on. The last line printed is the command that opens the explorer.
    `device` (interp.devices) goes to every step whose function takes a `device`.
    """
    import inspect

    workspace = Path(workspace)
    options = {"activations": {"tokens": tokens}, "sae": {"sae_tokens": sae_tokens}}
    done: dict[str, Path] = {}
    failed: dict[str, str] = {}
    t_all = time.perf_counter()
    for step in steps if steps is not None else DEMO_STEPS:
        t0 = time.perf_counter()
        try:
            fn = resolve_step(step)
            kw = dict(options.get(step.name, {}))
            if "device" in inspect.signature(fn).parameters:
                kw["device"] = device
            done[step.name] = Path(fn(workspace, echo, **kw))
        except Exception as e:
            if step.required:
                raise
            failed[step.name] = f"{type(e).__name__}: {e}"
            echo(f"{step.name}: FAILED ({failed[step.name]}); going on without it")
            continue
        echo(f"{step.name}: {time.perf_counter() - t0:.0f} s")
    echo("")
    for name, path in done.items():
        try:
            metrics = load_run(path).metrics
        except Exception:  # a step may return a path that is not a run
            metrics = {}
        echo(f"{name}: {path}")
        flat = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        if flat:
            echo("  " + json.dumps(flat)[:400])
    for name, why in failed.items():
        echo(f"{name}: failed: {why}")
    echo("")
    echo(f"Workspace: {workspace.resolve()} ({len(list_runs(workspace))} runs, "
         f"{time.perf_counter() - t_all:.0f} s)")
    if "activations" in done and "sae" in done:
        echo("Load the results in Python:")
        echo("  from interp.store import ActivationStore; "
             f"s = ActivationStore({str(done['activations'])!r})")
        echo("  from saes.formats import load_saelens; "
             f"sae = load_saelens({str(done['sae'] / 'sae')!r})")
    echo("Open the explorer on it:")
    echo(f"  interp app {workspace}")
    return done
