"""The demo step: the inference-time locality dial on the default model (uniform and progressive
schedules, no weight change), about half a minute on two busy cores."""

from __future__ import annotations

import time
from pathlib import Path

from interp.workspace import is_done, run_dir

DEMO_RUN = "demo-dial"


def _load_default(device: str = "auto"):
    from interp.models.loading import load_model

    return load_model(device=device)


def demo_step(workspace: Path, echo=print, device: str = "auto") -> Path:
    """Compare the uniform and progressive (beta 1, 3, 5) dials on SmolLM2-135M-Instruct through
    its hooks; writes run `localist/demo-dial` (skipped when already done)."""
    from interp.localist.finetune import ScheduleConfig
    from interp.localist.runs import run_schedules

    path = run_dir("localist", DEMO_RUN, workspace)
    if is_done(path):
        echo(f"localist: already done in {path}")
        return path
    echo("localist: turning the locality dial on the default model at inference (uniform and "
         "progressive schedules; `interp localist schedules` adds a fine-tune)")
    t0 = time.perf_counter()
    cfg = ScheduleConfig(train_layers=0, steps=0, batch_size=2, context_size=64, eval_windows=2,
                         device=device)
    run = run_schedules(cfg, model=_load_default(device), name=DEMO_RUN, workspace=workspace)
    run.finish(metrics={"seconds": round(time.perf_counter() - t0, 1)})
    return path
