"""The main job (`make demo`): the whole story on the default model and corpus.

Each step writes a run into the workspace and is skipped when its run is already done, so a
second `make demo` reuses finished work. Steps are a registry: a capability adds its
`demo_step(workspace: Path, echo) -> Path` with one line in `DEMO_STEPS`. The demo ends by
printing the command that opens the explorer on the workspace.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from interp.store import StoreConfig, cache_activations
from interp.workspace import is_done, list_runs, load_run, run_context, run_dir

DEMO_HOOK = "blocks.15.hook_resid_post"
DEMO_STORE = "demo-resid15"  # runs/activations/<this>: the store the later steps read
DEMO_SAE = "demo-topk-resid15"  # runs/sae/<this>: the SAE the later steps analyse


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo: `target` is "module:function", called as
    `function(workspace, echo) -> Path` (the run directory it wrote or found done)."""

    name: str
    target: str
    required: bool = False  # a required step's failure stops the demo; others are reported


DEMO_STEPS: list[DemoStep] = [
    DemoStep("activations", "interp.demo:cache_step", required=True),
    DemoStep("sae", "interp.demo:sae_step", required=True),
    DemoStep("features", "saes.features:demo_step"),
    DemoStep("atoms", "saes.atoms.runs:demo_step"),
    DemoStep("codebook", "saes.codebook.runs:demo_step"),
    DemoStep("graph", "circuits.demo:demo_step"),
    DemoStep("linearise", "interp.linearise.runs:demo_step"),
    DemoStep("localist", "interp.localist.demo:demo_step"),
    DemoStep("probes", "probes.demo:demo_step"),
    # one line per further capability, in the order they should run
]


def demo_store_path(workspace: Path) -> Path:
    return run_dir("activations", DEMO_STORE, workspace)


def demo_sae_path(workspace: Path) -> Path:
    return run_dir("sae", DEMO_SAE, workspace)


def resolve_step(step: DemoStep):
    """The function a step names (imported now, so a missing module fails here)."""
    module, _, func = step.target.partition(":")
    return getattr(importlib.import_module(module), func)


def cache_step(workspace: Path, echo=print, tokens: int = 131_072) -> Path:
    """Cache `tokens` tokens of the default model's layer-15 residual stream."""
    from interp.cli import summary

    config = StoreConfig(hooks=(DEMO_HOOK,), n_tokens=tokens)
    path = demo_store_path(workspace)
    if is_done(path):
        echo(f"activations: already cached in {path}")
        return path
    echo(f"activations: caching {tokens} tokens of {config.corpus.source!r} text at {DEMO_HOOK} "
         "with the default model (the first run converts the model once, ~30 s)")
    t0 = time.perf_counter()
    with run_context("activations", DEMO_STORE, config.to_dict(), root=workspace) as run:
        store = cache_activations(run.path, config)
        metrics = summary(store)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        metrics["tokens_per_s"] = round(store.manifest["n_tokens_seen"] / metrics["seconds"])
        run.finish(metrics=metrics, artefacts={"manifest": "manifest.json"})
    return path


def sae_step(workspace: Path, echo=print, sae_tokens: int = 1_048_576) -> Path:
    """Train and evaluate a top-k SAE on the demo store."""
    from saes.base import SAEConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    store_path = demo_store_path(workspace)
    path = demo_sae_path(workspace)
    if is_done(path):
        echo(f"sae: already trained in {path}")
        return path
    echo(f"sae: training a top-k SAE (k=32, 4608 latents) on {sae_tokens} activation vectors")
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=576, d_sae=4608, k=32,
                                    hook_name=DEMO_HOOK, model_name="SmolLM2-135M-Instruct"),
                      activations=str(store_path), total_tokens=sae_tokens, batch_size=4096)
    train_run(cfg, path, DEMO_SAE)
    return path


def run_demo(workspace: Path, tokens: int = 131_072, sae_tokens: int = 1_048_576,
             echo=print, steps: list[DemoStep] | None = None) -> dict:
    """Run every step of `DEMO_STEPS` (or `steps`) in order; return {step: run path}.

    A required step that fails stops the demo (its error propagates); any other failing step is
    reported and the demo goes on. The last line printed is the command that opens the explorer.
    """
    workspace = Path(workspace)
    options = {"activations": {"tokens": tokens}, "sae": {"sae_tokens": sae_tokens}}
    done: dict[str, Path] = {}
    failed: dict[str, str] = {}
    t_all = time.perf_counter()
    for step in steps if steps is not None else DEMO_STEPS:
        t0 = time.perf_counter()
        try:
            done[step.name] = Path(resolve_step(step)(workspace, echo,
                                                      **options.get(step.name, {})))
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
