"""SAE runs in the workspace: train (or resume) a dictionary into a run directory, evaluate it.

The CLI (`interp train-sae`, `interp eval-sae`, `interp resume`) and the demo call these.
A run directory holds `run.json` (kind "sae"), `checkpoint/`, `metrics.jsonl`, `sae/` (SAELens
format) and `eval.json`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from interp.workspace import run_context
from saes.train import TrainConfig, Trainer


def infer_d(cfg: TrainConfig, hook: str) -> int:
    """Width of a hook's vectors, from the store's manifest or one tiny forward pass."""
    if cfg.activations:
        from interp.store import ActivationStore

        return ActivationStore(cfg.activations, verify=False).d(hook)
    from interp.models.loading import load_model

    model = load_model(cfg.model or None)
    _, cache = model.run_with_cache("a", hooks=[hook], stop_at_layer="auto")
    return int(cache[hook][0, 0].numel())


def train_run(cfg: TrainConfig, run_dir: str | Path, name: str | None = None,
              progress: bool = True, evaluate: bool = True, stop_after: int | None = None,
              eval_windows: int = 16):
    """Train (resuming if a checkpoint exists) and evaluate; returns the run."""
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 owns run.json
        Trainer(cfg, run_dir, progress=False).train(stop_after=stop_after)
        return None
    with run_context("sae", name or run_dir.name, cfg.to_dict(), path=run_dir) as run:
        trainer = Trainer(cfg, run_dir, progress=progress)
        _finish(run, trainer, trainer.train(stop_after=stop_after), evaluate, eval_windows)
    return run


def _finish(run, trainer: Trainer, sae, evaluate: bool, eval_windows: int) -> None:
    """Record a trainer's outcome in its run: still running (stopped early) or done + evaluated."""
    cfg = trainer.cfg
    if sae is None:
        run.finish(metrics={"step": trainer.step}, status="running")
        return
    metrics = {"steps": trainer.step, "tokens": trainer.step * cfg.batch_size,
               "scale_in": trainer.scale_in, "scale_out": trainer.scale_out}
    artefacts = {"sae": "sae", "metrics": "metrics.jsonl", "checkpoint": "checkpoint"}
    if evaluate and cfg.activations:
        report = evaluate_run_sae(sae, cfg.activations, run.path, eval_windows)
        metrics.update(report_metrics(report))
        artefacts["eval"] = "eval.json"
    run.finish(metrics=metrics, artefacts=artefacts)


def train_many_runs(cfgs: list[TrainConfig], run_dirs: list[str | Path], progress: bool = True,
                    evaluate: bool = True, eval_windows: int = 16) -> list:
    """Several dictionaries from one data pass (`saes.multi.train_many`), each its own run."""
    from saes.multi import train_many

    run_dirs = [Path(d) for d in run_dirs]
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(run_context("sae", d.name, c.to_dict(), path=d))
                for c, d in zip(cfgs, run_dirs)]
        trainers: list[Trainer] = []
        saes = train_many(cfgs, run_dirs, progress=progress, trainers=trainers)
        for run, trainer, sae in zip(runs, trainers, saes):
            _finish(run, trainer, sae, evaluate, eval_windows)
    return runs


def resume_run(run_dir: str | Path, progress: bool = True):
    """Continue a run from its checkpoint with the config in its run.json."""
    from interp.workspace import load_run_of_kind

    run = load_run_of_kind(run_dir, "sae", "`interp resume`")
    return train_run(TrainConfig.from_dict(run.config), run_dir, run.name, progress=progress)


def evaluate_run_sae(sae, activations: str | Path, run_dir: str | Path, eval_windows: int = 16,
                     progress: bool = False) -> dict:
    """Evaluate on the store's held-out rows, and splice into the store's model on
    `eval_windows` held-out windows (CE/KL loss recovered); writes `eval.json`."""
    from interp.models.loading import load_model
    from interp.store import ActivationStore
    from saes.evaluate import evaluate_sae, write_report

    store = ActivationStore(activations)
    model = load_model(store.manifest["config"]["model"]) if eval_windows else None
    report = evaluate_sae(sae, store=store, model=model, n_windows=eval_windows or None,
                          progress=progress)
    write_report(report, Path(run_dir) / "eval.json")
    return report


def report_metrics(report: dict) -> dict:
    """The scalar figures of an evaluation report, flat (for run.json and the CLI)."""
    out = {k: v for k, v in report["reconstruction"].items() if isinstance(v, (int, float))}
    for k, v in (report.get("lm") or {}).items():
        if isinstance(v, (int, float)) or v is None:
            out[k] = v
    return out


def demo_step(workspace: Path, echo=print, sae_tokens: int = 1_048_576) -> Path:
    """Demo: train and evaluate a top-k SAE (k=32, 4608 latents) on the demo store."""
    from interp.demo import DEMO_HOOK, DEMO_SAE, demo_sae_path, demo_store_path
    from interp.workspace import is_done
    from saes.base import SAEConfig

    path = demo_sae_path(workspace)
    if is_done(path):
        echo(f"sae: already trained in {path}")
        return path
    echo(f"sae: training a top-k SAE (k=32, 4608 latents) on {sae_tokens} activation vectors")
    cfg = TrainConfig(sae=SAEConfig(architecture="topk", d_in=576, d_sae=4608, k=32,
                                    hook_name=DEMO_HOOK, model_name="SmolLM2-135M-Instruct"),
                      activations=str(demo_store_path(workspace)), total_tokens=sae_tokens,
                      batch_size=4096)
    train_run(cfg, path, DEMO_SAE)
    return path
