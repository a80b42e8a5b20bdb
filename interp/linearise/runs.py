"""Linearisation runs in the workspace (kind "linearise") and the demo step.

A run directory holds `run.json`, `linearise.json` (the summary: metrics, decodings, per-layer
table; what the figures in `interp.linearise.plots` read) and `tensors.safetensors` (y, U, S, V,
per-token contributions, and the dense Jacobian when `full`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from interp.io import atomic_write_json, read_json, save_safetensors_atomic
from interp.linearise.analysis import LineariseConfig, Linearisation, linearise
from interp.workspace import is_done, run_context, run_dir

KIND = "linearise"
ARTEFACTS = {"summary": "linearise.json", "tensors": "tensors.safetensors"}


def _metrics(summary: dict) -> dict:
    m = dict(summary["metrics"])
    m["predicted"] = summary["prediction"][0]["token"]
    m["top_u1_tokens"] = summary["singular"][0]["left"]["tokens"][:5]
    return m


def save_linearisation(result: Linearisation, path: str | Path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / ARTEFACTS["summary"], result.summary)
    save_safetensors_atomic({k: v.contiguous() for k, v in result.tensors.items()},
                            path / ARTEFACTS["tensors"])


def load_linearisation(path: str | Path, tensors: bool = False) -> Linearisation:
    """Read a linearise run directory (summary only unless `tensors`)."""
    path = Path(path)
    summary = read_json(path / ARTEFACTS["summary"], expect=dict)
    ts = {}
    if tensors:
        from interp.io import load_safetensors

        ts = load_safetensors(path / ARTEFACTS["tensors"], "run `interp linearise` again.")
    return Linearisation(summary=summary, tensors=ts)


def linearise_run(config: LineariseConfig, name: str | None = None, workspace=None,
                  out: str | Path | None = None, model=None, progress: bool = True):
    """Linearise `config.prompt` into a run (at `out`, else <workspace>/runs/linearise/<name>)."""
    from interp.models.loading import load_model

    name = name or (Path(out).name if out else f"linearise-{int(time.time())}")
    with run_context(KIND, name, config.to_dict(), root=workspace, path=out) as run:
        model = model if model is not None else load_model(config.model or None)
        result = linearise(model, config, progress=progress)
        save_linearisation(result, run.path)
        run.finish(metrics=_metrics(result.summary), artefacts=dict(ARTEFACTS))
    return run


DEMO_PROMPT = "The Golden Gate Bridge is in the city of San"
DEMO_NAME = "demo-golden-gate"


def demo_step(workspace: Path, echo=print) -> Path:
    """Linearise the default model's next-token prediction on a short prompt (skipped if done)."""
    path = run_dir(KIND, DEMO_NAME, workspace)
    if is_done(path):
        echo(f"linearise: already done in {path}")
        return path
    echo(f"linearise: exact Jacobian linearisation of {DEMO_PROMPT!r} on the default model")
    # per-layer ranks cost ~20 s more on 2 cores; `interp linearise` computes them by default
    cfg = LineariseConfig(prompt=DEMO_PROMPT, dtype="float32", k=16, block=8, n_iter=6,
                          per_layer=False)
    run = linearise_run(cfg, name=DEMO_NAME, workspace=workspace, progress=False)
    m = run.metrics
    echo(f"  next token {m['predicted']!r}; sum_i J_i x_i reproduces y to {m['rel_error']:.1e} "
         f"(float32); stable rank {m['stable_rank']:.2f}; top singular vector decodes to "
         f"{json.dumps(m['top_u1_tokens'])}")
    return path
