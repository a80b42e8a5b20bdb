"""What a planted-circuit task is: prompts, counterfactuals, a metric, a trainer, stored files.

A task makes batches of clean prompts and their counterfactuals (same length; the answer is
read at the last position), scores a model's last-position logits with a metric (higher =
the behaviour is there), trains its small model (`circuits.tasks.model.TinyTransformer`) in
seconds to minutes on a CPU, and stores the trained weights (`<name>.safetensors`) beside a
JSON file (`<name>.json`) with the model's config, the training settings and results, and the
ground-truth circuit found by exhaustive ablation (`circuits.tasks.ground_truth`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.tasks.model import TinyConfig, TinyTransformer
from interp.errors import ConfigError

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


@dataclass
class TaskBatch:
    """Clean prompts, their counterfactuals and what the metric needs.

    answer: the correct next token of each clean prompt; distractor: the counterfactual's
    answer (the metric is then a logit difference); good: a [batch, vocab] mask of acceptable
    answers where there are many (greater-than, legal moves); tokens_of_interest: tokens the
    metric compares (e.g. the years), None = all.
    """

    clean: Int[Tensor, "batch pos"]
    corrupt: Int[Tensor, "batch pos"]
    answer: Int[Tensor, "batch"] | None = None
    distractor: Int[Tensor, "batch"] | None = None
    good: Bool[Tensor, "batch vocab"] | None = None
    tokens_of_interest: Int[Tensor, "n"] | None = None
    extra: dict = field(default_factory=dict)  # task-specific per-prompt tensors (boards)

    def __len__(self) -> int:
        return self.clean.shape[0]


@dataclass(frozen=True)
class TrainSettings:
    """How a task model is trained (recorded in its JSON)."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0


@dataclass
class Task:
    """A task: subclasses define the data, the metric and the training loss."""

    name: str = ""
    description: str = ""
    model_cfg: TinyConfig = field(default_factory=TinyConfig)
    train_settings: TrainSettings = field(default_factory=TrainSettings)
    accuracy_target: float = 0.9  # the trained model must reach this on fresh prompts
    # components trained to carry the task alone (strict interchange-intervention training:
    # the others are ablated in a second loss term, so the task must not depend on them)
    planted: tuple[str, ...] = ()
    siit_weight: float = 1.0
    siit_match: float = 0.3  # weight of the squared logit change at the last position
    other_init: float = 1.0  # initial scale of the other components' output weights

    # ----------------------------------------------------------------- data
    def batch(self, n: int, seed: int) -> TaskBatch:
        """`n` clean/counterfactual pairs (deterministic in `seed`)."""
        raise NotImplementedError

    def token_names(self) -> list[str]:
        """A readable string per token id (for displays)."""
        return [str(i) for i in range(self.model_cfg.d_vocab)]

    # ----------------------------------------------------------------- scoring
    def metric(self, logits: Float[Tensor, "... batch vocab"], batch: TaskBatch
               ) -> Float[Tensor, "... batch"]:
        """Per-prompt behaviour score from last-position logits: the logit difference
        answer - distractor by default (the mean logit stands in for a missing distractor)."""
        ans = logits.gather(-1, _expand(batch.answer, logits)).squeeze(-1)
        if batch.distractor is not None:
            return ans - logits.gather(-1, _expand(batch.distractor, logits)).squeeze(-1)
        return ans - logits.mean(-1)

    def correct(self, logits: Float[Tensor, "batch vocab"], batch: TaskBatch
                ) -> Bool[Tensor, "batch"]:
        """Whether the model's top prediction is right, per prompt."""
        return logits.argmax(-1) == batch.answer

    def train_loss(self, logits: Float[Tensor, "batch pos vocab"], tokens: Tensor,
                   batch: TaskBatch) -> Tensor:
        """Cross-entropy of the answer at the last position (tasks may train on more)."""
        return F.cross_entropy(logits[:, -1], batch.answer)

    def train_batch(self, n: int, seed: int) -> tuple[Tensor, TaskBatch]:
        """Training tokens and their batch (by default the clean prompts)."""
        b = self.batch(n, seed)
        return b.clean, b

    # ----------------------------------------------------------------- files
    @property
    def weights_path(self) -> Path:
        return HERE / "weights" / f"{self.name}.safetensors"

    @property
    def info_path(self) -> Path:
        return HERE / "weights" / f"{self.name}.json"


def _expand(tok: Tensor, logits: Tensor) -> Tensor:
    return tok.reshape(*([1] * (logits.ndim - 2)), -1, 1).expand(*logits.shape[:-1], 1)


def siit_loss(task: Task, model: TinyTransformer, tokens: Tensor, batch: TaskBatch,
              clean: Tensor, clean_logits: Tensor, mean: bool) -> Tensor:
    """The task loss with every component outside `task.planted` ablated (resampled: its
    output on the batch's counterfactual prompts, or on other prompts of the batch (a rotation)
    where the batch has none; or replaced by its batch mean), plus the squared change of the
    last position's (centred) logits under that ablation.

    A simplified strict interchange-intervention training (SIIT, Gupta et al. 2024, InterpBench,
    arXiv 2407.14494): the non-circuit components may compute anything, but the output must
    not depend on them, which plants the circuit while they stay active.
    """
    g = model.graph
    keep = g.component_mask(task.planted)
    mask = g.edges_of_components(keep)[None].float()
    with torch.no_grad():
        other = clean.detach()
        if mean:
            corrupt = other.mean(1, keepdim=True).expand_as(other)
        elif batch.corrupt is not None and batch.corrupt is not batch.clean:
            corrupt = model.sender_outputs(batch.corrupt)
        else:
            corrupt = other.roll(1, dims=1)
    logits = model.masked_logits(mask, corrupt.contiguous(), clean, all_positions=True)[0]
    change = logits[:, -1] - clean_logits[:, -1].detach()
    change = change - change.mean(-1, keepdim=True)
    return task.train_loss(logits, tokens, batch) + task.siit_match * change.pow(2).mean()


def train_task_model(task: Task, progress: bool = False) -> tuple[TinyTransformer, list[dict]]:
    """Train `task`'s model from its seed with AdamW (linear warm-up, cosine decay); with
    planted components, every step adds an SIIT loss (resample and mean ablation in turn).
    Returns the model and a loss log."""
    from tqdm.auto import tqdm

    s = task.train_settings
    torch.manual_seed(s.seed)
    model = TinyTransformer(task.model_cfg, seed=s.seed)
    if task.planted and task.other_init != 1.0:
        _scale_others(model, task.planted, task.other_init)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay,
                            betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / s.warmup) * 0.5 * (
        1 + torch.cos(torch.tensor(torch.pi * i / s.steps)).item()))
    history = []
    t0 = time.perf_counter()
    for step in tqdm(range(s.steps), disable=not progress, desc=task.name):
        tokens, b = task.train_batch(s.batch_size, seed=10_000 * s.seed + step + 1)
        logits, senders = model.logits_and_senders(tokens)
        loss = task.train_loss(logits, tokens, b)
        if task.planted:  # resample ablation on even steps, mean ablation on odd ones
            loss = loss + task.siit_weight * siit_loss(task, model, tokens, b, senders, logits,
                                                       mean=step % 2 == 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == s.steps - 1:
            history.append({"step": step, "loss": loss.item(),
                            "seconds": round(time.perf_counter() - t0, 2)})
            log.info("%s step %d loss %.4f", task.name, step, loss.item())
    return model.eval().requires_grad_(False), history


@torch.no_grad()
def _scale_others(model: TinyTransformer, planted, scale: float) -> None:
    """Start the components outside the planted circuit with smaller output weights."""
    for node in model.graph.nodes:
        if node.kind == "head" and node.name not in planted:
            model.blocks[node.layer].attn.W_O[node.head] *= scale
        elif node.kind == "mlp" and node.name not in planted:
            model.blocks[node.layer].mlp.W_out *= scale


@torch.no_grad()
def evaluate_accuracy(task: Task, model: TinyTransformer, n: int = 512, seed: int = 123_456
                      ) -> dict:
    """Accuracy and mean metric of `model` on fresh clean prompts (and the metric on their
    counterfactuals)."""
    b = task.batch(n, seed)
    clean = model(b.clean)[:, -1]
    corrupt = model(b.corrupt)[:, -1]
    return {"accuracy": float(task.correct(clean, b).float().mean()),
            "metric_clean": float(task.metric(clean, b).mean()),
            "metric_corrupt": float(task.metric(corrupt, b).mean())}


def check_task_name(name: str, names) -> None:
    if name not in names:
        from interp.errors import unknown_name_message

        raise ConfigError(unknown_name_message("task", name, names))
