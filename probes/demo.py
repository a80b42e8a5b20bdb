"""The probes step of `make demo`: lens, geometry and a probe curve on the default model.

The probe is a ridge classifier (closed form: a few seconds for seven layers and their control
tasks; `interp probe` defaults to logistic regression).

One forward pass over `DEMO_TOKENS` tokens of CPython's documentation (labelled for the
word-class task) feeds three runs: `lens/demo-lens`, `geometry/demo-geometry` and
`probe/demo-word-class`. Each is skipped when already done.
"""

from __future__ import annotations

from pathlib import Path

from interp.workspace import is_done, load_run, run_dir

DEMO_TOKENS = 2048
DEMO_PROBE_LAYERS = "embed,4,9,14,19,24,29"


def demo_step(workspace: Path, echo=print, model=None, device: str = "auto") -> Path:
    """Write the three runs (if not done yet) and return the lens run's directory."""
    from probes.activations import collect, corpus_token_set, residual_hooks
    from probes.labels import get_task
    from probes.runs import (GeometryConfig, LensConfig, ProbeConfig, geometry_run, lens_run,
                             probe_run)

    workspace = Path(workspace)
    paths = {"lens": run_dir("lens", "demo-lens", workspace),
             "geometry": run_dir("geometry", "demo-geometry", workspace),
             "probe": run_dir("probe", "demo-word-class", workspace)}
    if all(is_done(p) for p in paths.values()):
        echo(f"probes: lens, geometry and probe runs already done in {workspace / 'runs'}")
        return paths["lens"]
    echo(f"probes: logit/tuned lens, layer geometry and a word-class probe on {DEMO_TOKENS} "
         "tokens of the Python docs (one forward pass through all 30 layers)")
    if model is None:
        from interp.models.loading import load_model

        model = load_model(device=device)
    task = get_task("word_class")
    tokens = corpus_token_set(model, "python-docs", 128, DEMO_TOKENS, task)
    hooks = residual_hooks(model.cfg.n_layers)
    acts = collect(model, tokens, hooks, batch_size=8, progress=False)
    states = (acts, hooks)
    if not is_done(paths["lens"]):
        lens_run(LensConfig(max_tokens=DEMO_TOKENS, eval_tokens=128, device=device), workspace,
                 "demo-lens",
                 model=model, progress=False, states=states)
    if not is_done(paths["geometry"]):
        geometry_run(GeometryConfig(max_tokens=DEMO_TOKENS, max_points_twonn=DEMO_TOKENS,
                                    device=device),
                     workspace, "demo-geometry", model=model, progress=False, states=states)
    if not is_done(paths["probe"]):
        probe_run(ProbeConfig(task="word_class", max_tokens=DEMO_TOKENS, kind="ridge",
                              layers=DEMO_PROBE_LAYERS, l2_grid=(1e-3, 1e-2, 1e-1, 1.0),
                              device=device),
                  workspace, "demo-word-class", model=model, progress=False, acts=acts)
    for kind, p in paths.items():
        m = load_run(p).metrics
        echo(f"  {kind}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in m.items()))
    return paths["lens"]  # the demo prints the step's time
