"""Loading a task's committed model and its stored ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuits.tasks.base import Task
from circuits.tasks.model import TinyConfig, TinyTransformer
from interp.errors import ModelLoadError
from interp.io import read_json


@dataclass
class LoadedTask:
    """A task with its trained model and what its JSON file records (`info`: config,
    training settings and log, accuracy, ground truth)."""

    task: Task
    model: TinyTransformer
    info: dict

    @property
    def truth_components(self) -> torch.Tensor:
        """Boolean mask over the graph's components: the stored ground truth."""
        return self.model.graph.component_mask(self.info["ground_truth"]["components"])

    @property
    def truth_edges(self) -> torch.Tensor:
        names = set(self.info["ground_truth"]["edges"])
        return torch.tensor([n in names for n in self.model.graph.edge_names])


def load_trained(task: Task) -> LoadedTask:
    if not task.weights_path.is_file() or not task.info_path.is_file():
        raise ModelLoadError(
            f"Task {task.name!r} has no trained model at {task.weights_path}; train it with "
            f"`python -m circuits.tasks.train {task.name}`.")
    info = read_json(task.info_path)
    model = TinyTransformer.load(TinyConfig.from_dict(info["model"]), task.weights_path)
    return LoadedTask(task, model, info)
