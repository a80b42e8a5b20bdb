"""The script that made the committed task models: `python -m circuits.tasks.train [TASK ...]`.

For each task: train its model from the task's seed (CPU, seconds to minutes), check the
accuracy target on fresh prompts, find the ground-truth circuit by exhaustive ablation and
write `circuits/tasks/weights/<task>.safetensors` and `<task>.json` (model config, training
settings, loss log, accuracy, ground truth with its ablation check, wall time).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import torch

from circuits.tasks import TASKS, get_task
from circuits.tasks.base import evaluate_accuracy, train_task_model
from circuits.tasks.ground_truth import find_ground_truth
from circuits.tasks.model import TinyConfig, TinyTransformer
from interp.io import atomic_write_json, read_json

log = logging.getLogger(__name__)


def make(name: str, out_dir=None, progress: bool = False, truth_only: bool = False) -> dict:
    """Train, check and store one task model (the weights as soon as they are trained, then
    the JSON with the ground truth); `truth_only` redoes the checks and the ground truth of
    the stored weights. Returns the info dict."""
    task = get_task(name)
    weights = task.weights_path if out_dir is None else out_dir / task.weights_path.name
    meta = task.info_path if out_dir is None else out_dir / task.info_path.name
    if truth_only:
        info = read_json(meta)
        model = TinyTransformer.load(TinyConfig.from_dict(info["model"]), weights)
    else:
        t0 = time.perf_counter()
        if hasattr(task, "prepare"):
            task.prepare()
        model, history = train_task_model(task, progress=progress)
        info = {"task": name, "description": task.description,
                "model": task.model_cfg.to_dict(),
                "train": {**dataclasses.asdict(task.train_settings), "planted": list(task.planted),
                          "siit_weight": task.siit_weight, "siit_match": task.siit_match,
                          "other_init": task.other_init},
                "history": history, "train_seconds": round(time.perf_counter() - t0, 1),
                "torch": torch.__version__}
        model.save(weights)
        atomic_write_json(meta, info)
    info |= evaluate_accuracy(task, model)
    info["accuracy_target"] = task.accuracy_target
    t1 = time.perf_counter()
    info["ground_truth"] = find_ground_truth(model, task)
    info["ground_truth_seconds"] = round(time.perf_counter() - t1, 1)
    atomic_write_json(meta, info)
    return info


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="*", default=list(TASKS), help="task names (default: all)")
    p.add_argument("--truth-only", action="store_true",
                   help="keep the stored weights; redo the accuracy check and ground truth")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    for name in args.tasks:
        info = make(name, progress=True, truth_only=args.truth_only)
        gt = info["ground_truth"]
        log.info("%s: accuracy %.3f, ground truth %s (kept %s, removed %s, passes %s)", name,
                 info["accuracy"], gt["components"], gt["faithfulness_kept"],
                 gt["faithfulness_removed"], gt["passes"])


if __name__ == "__main__":
    main()
