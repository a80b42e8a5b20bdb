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
from interp.io import atomic_write_json

log = logging.getLogger(__name__)


def make(name: str, out_dir=None, progress: bool = False) -> dict:
    """Train, check and store one task model; returns its info dict."""
    task = get_task(name)
    t0 = time.perf_counter()
    if hasattr(task, "prepare"):
        task.prepare()
    model, history = train_task_model(task, progress=progress)
    seconds = time.perf_counter() - t0
    acc = evaluate_accuracy(task, model)
    from circuits.tasks.ground_truth import find_ground_truth

    t1 = time.perf_counter()
    truth = find_ground_truth(model, task)
    info = {"task": name, "description": task.description, "model": task.model_cfg.to_dict(),
            "train": dataclasses.asdict(task.train_settings), "history": history,
            "train_seconds": round(seconds, 1),
            "ground_truth_seconds": round(time.perf_counter() - t1, 1),
            "torch": torch.__version__, **acc, "accuracy_target": task.accuracy_target,
            "ground_truth": truth}
    weights = task.weights_path if out_dir is None else out_dir / task.weights_path.name
    meta = task.info_path if out_dir is None else out_dir / task.info_path.name
    model.save(weights)
    atomic_write_json(meta, info)
    return info


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="*", default=list(TASKS), help="task names (default: all)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    for name in args.tasks:
        info = make(name, progress=True)
        gt = info["ground_truth"]
        log.info("%s: accuracy %.3f, ground truth %s (kept %s, removed %s, passes %s)", name,
                 info["accuracy"], gt["components"], gt["faithfulness_kept"],
                 gt["faithfulness_removed"], gt["passes"])


if __name__ == "__main__":
    main()
