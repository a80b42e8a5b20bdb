"""SAE runs in the workspace: train (or resume) a dictionary into a run directory, evaluate it.

The CLI (`interp train-sae`, `interp eval-sae`, `interp resume`) and the demo call these.
A run directory holds `run.json` (kind "sae"), `checkpoint/`, `metrics.jsonl`, `sae/` (SAELens
format) and `eval.json`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from interp.errors import InterpError
from interp.workspace import load_run_of_kind, run_context
from saes.data import DataConfig
from saes.train import TrainConfig, Trainer, split_config


def run_config(cfg: TrainConfig, data: DataConfig) -> dict:
    """An SAE run's `config` in run.json: the TrainConfig's fields and the data under "data"."""
    return {**cfg.to_dict(), "data": data.to_dict()}


def run_data(run) -> DataConfig:
    """Where an SAE run's data came from: the DataConfig of a trained run, or, for a dictionary
    imported into the workspace (`interp pretrained get`), its `model` and `activations`."""
    if "total_tokens" in run.config:  # trained here: TrainConfig + data (or the older form)
        _, data = split_config(run.config)
        if data is not None:
            return data
    return DataConfig(activations=str(run.config.get("activations") or ""),
                      model=str(run.config.get("model") or ""))


def store_of(run) -> str:
    """The activation store an SAE run trained on ("" if it streamed from a model)."""
    return run_data(run).activations


def train_run(cfg: TrainConfig, data: DataConfig, run_dir: str | Path, name: str | None = None,
              progress: bool = True, evaluate: bool = True, stop_after: int | None = None,
              eval_windows: int = 16, source=None):
    """Train (resuming if a checkpoint exists) and evaluate; returns the run. `source`: the
    data's source if already open (a model loaded once)."""
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 owns run.json
        trainer = Trainer(cfg, run_dir, data, progress=False)
        if source is not None:
            trainer.source = source
        trainer.train(stop_after=stop_after)
        return None
    with run_context("sae", name or run_dir.name, run_config(cfg, data), path=run_dir) as run:
        trainer = Trainer(cfg, run_dir, data, progress=progress)
        if source is not None:
            trainer.source = source
        _finish(run, trainer, trainer.train(stop_after=stop_after), data, evaluate,
                eval_windows)
    return run


def _finish(run, trainer: Trainer, sae, data: DataConfig, evaluate: bool,
            eval_windows: int) -> None:
    """Record a trainer's outcome in its run: still running (stopped early) or done + evaluated."""
    cfg = trainer.cfg
    if sae is None:
        run.finish(metrics={"step": trainer.step}, status="running")
        return
    metrics = {"steps": trainer.step, "tokens": trainer.step * cfg.batch_size,
               "scale_in": trainer.scale_in, "scale_out": trainer.scale_out}
    artefacts = {"sae": "sae", "metrics": "metrics.jsonl", "checkpoint": "checkpoint"}
    if evaluate and data.activations:
        report = evaluate_run_sae(sae, data.activations, run.path, eval_windows,
                                  device=cfg.device, dtype=data.model_dtype)
        metrics.update(report_metrics(report))
        artefacts["eval"] = "eval.json"
    run.finish(metrics=metrics, artefacts=artefacts)


def train_many_runs(cfgs: list[TrainConfig], data: DataConfig, run_dirs: list[str | Path],
                    progress: bool = True, evaluate: bool = True, eval_windows: int = 16,
                    source=None) -> list:
    """Several dictionaries from one data pass (`saes.multi.train_many`), each its own run."""
    from saes.multi import train_many

    run_dirs = [Path(d) for d in run_dirs]
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(run_context("sae", d.name, run_config(c, data), path=d))
                for c, d in zip(cfgs, run_dirs)]
        trainers: list[Trainer] = []
        saes = train_many(cfgs, run_dirs, data, progress=progress, trainers=trainers,
                          source=source)
        for run, trainer, sae in zip(runs, trainers, saes):
            _finish(run, trainer, sae, data, evaluate, eval_windows)
    return runs


def resume_run(run_dir: str | Path, progress: bool = True, device: str | None = None):
    """Continue a run from its checkpoint with the config in its run.json (on `device`, if
    given, instead of the run's own: a run may move between devices)."""
    import dataclasses

    run = load_run_of_kind(run_dir, "sae", "`interp resume`")
    if "total_tokens" not in run.config:
        raise InterpError(f"{run_dir} holds a dictionary imported into the workspace, not one "
                          "trained here: there is no training to resume.")
    cfg, data = split_config(run.config)
    if data is None:
        raise InterpError(f"{run_dir}/run.json names no training data; it cannot be resumed.")
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    return train_run(cfg, data, run_dir, run.name, progress=progress)


def evaluate_run_sae(sae, activations: str | Path, run_dir: str | Path, eval_windows: int = 16,
                     progress: bool = False, device: str = "auto", dtype: str = "float32"
                     ) -> dict:
    """Evaluate on the store's held-out rows, and splice into the store's model on
    `eval_windows` held-out windows (CE/KL loss recovered); writes `eval.json`. The SAE and
    the model run on `device` (interp.devices), the model in `dtype`."""
    from interp.devices import resolve_device
    from interp.models.loading import load_model
    from interp.store import ActivationStore
    from saes.evaluate import evaluate_sae, write_report

    store = ActivationStore(activations)
    where = resolve_device(device)
    sae = sae.to(where)
    model = (load_model(store.manifest["config"]["model"], device=where, dtype=dtype)
             if eval_windows else None)
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


def demo_step(workspace: Path, echo=print, sae_tokens: int = 1_048_576,
              device: str = "auto") -> Path:
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
                      total_tokens=sae_tokens, batch_size=4096, device=device)
    train_run(cfg, DataConfig(activations=str(demo_store_path(workspace))), path, DEMO_SAE)
    return path
