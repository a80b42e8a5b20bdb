"""The demo step for attribution graphs: small transcoders on the first layers of the default
model, then the graph of a short code prompt (the other layers' MLPs appear as error nodes)."""

from __future__ import annotations

import time
from pathlib import Path

from interp.workspace import is_done

DEMO_LAYERS = [0, 1, 2]
DEMO_PROMPT = "def add(a, b):\n    return a +"


def demo_step(workspace: Path, echo=print, tokens: int = 8_192) -> Path:
    """Train per-layer transcoders (layers 0-2, 1024 latents, k=16) streaming from the default
    model, then write the "graph" run `demo-graph`; each part is skipped when already done."""
    from circuits.runs import graph_run
    from circuits.transcoders import load_transcoders, train_transcoders
    from interp.models.loading import load_model
    from interp.workspace import run_dir

    workspace = Path(workspace)
    tc_path = run_dir("transcoders", "demo-transcoders", workspace)
    graph_path = run_dir("graph", "demo-graph", workspace)
    if is_done(graph_path):
        echo(f"graph: already attributed in {graph_path}")
        return graph_path
    model = load_model()
    if not is_done(tc_path):
        echo(f"transcoders: training TopK transcoders at layers {DEMO_LAYERS} of the default "
             f"model on {tokens} streamed tokens")
        t0 = time.perf_counter()
        train_transcoders("", DEMO_LAYERS, tc_path, tokens=tokens, width=1024, k=16,
                          batch_size=1024, d_model=model.cfg.d_model, progress=False)
        echo(f"transcoders: done in {time.perf_counter() - t0:.0f} s")
    echo(f"graph: attributing {DEMO_PROMPT!r}")
    run = graph_run(model, load_transcoders(tc_path), DEMO_PROMPT, "demo-graph",
                    workspace=workspace)
    m = run.metrics
    echo(f"graph: {m['n_features']} features, {m['kept_nodes']} nodes kept, replacement score "
         f"{m['replacement_score']:.3f}, top logit {m['top_logit']!r}")
    return run.path
