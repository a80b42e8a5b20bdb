"""Greater-than on year templates: "The war lasted from the year 17YY to the year 17" -> YY' > YY.

A small version of Hanna et al. 2023 (arXiv 2305.00586) in a 2-layer transformer with MLPs:
century and two-digit year tokens, a few nouns; the model is trained to spread its probability
over the years after YY. Metric: the probability difference sum_{y > YY} p(y) - sum_{y <= YY}
p(y); counterfactual: the same prompt with YY = 01 (the paper's "01-dataset"), where the
start year says nothing about which years are later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.tasks.base import Task, TaskBatch, TrainSettings
from circuits.tasks.model import TinyConfig

WORDS = ["<bos>", "The", "lasted", "from", "the year", "to", "war", "deal", "trip", "reign"]
BOS, THE, LASTED, FROM, YEAR, TO = range(6)
NOUNS = [6, 7, 8, 9]
CENTURIES = [10, 11, 12, 13]  # "15".."18"
YEAR0 = 14  # token of "00"; "99" is YEAR0 + 99
PROMPT_LEN = 11


@dataclass
class GreaterThan(Task):
    name: str = "greater_than"
    description: str = "years: from the year 17YY to the year 17 -> YY' > YY"
    model_cfg: TinyConfig = field(default_factory=lambda: TinyConfig(
        n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=128, d_vocab=YEAR0 + 100,
        n_ctx=PROMPT_LEN))
    train_settings: TrainSettings = field(default_factory=lambda: TrainSettings(
        steps=600, batch_size=64, lr=3e-3))
    accuracy_target: float = 0.9
    planted: tuple[str, ...] = ("a0.h3", "m0", "a1.h1", "m1")

    def batch(self, n: int, seed: int) -> TaskBatch:
        g = torch.Generator().manual_seed(seed)
        yy = torch.randint(1, 99, (n,), generator=g)  # 01 too: the counterfactual's year
        noun = torch.tensor(NOUNS)[torch.randint(0, len(NOUNS), (n,), generator=g)]
        cent = torch.tensor(CENTURIES)[torch.randint(0, len(CENTURIES), (n,), generator=g)]
        clean = torch.stack([torch.full((n,), BOS), torch.full((n,), THE), noun,
                             torch.full((n,), LASTED), torch.full((n,), FROM),
                             torch.full((n,), YEAR), cent, YEAR0 + yy, torch.full((n,), TO),
                             torch.full((n,), YEAR), cent], dim=1)
        corrupt = clean.clone()
        corrupt[:, 7] = YEAR0 + 1
        years = torch.arange(100)
        good = torch.zeros(n, self.model_cfg.d_vocab, dtype=torch.bool)
        good[:, YEAR0:] = years[None, :] > yy[:, None]
        return TaskBatch(clean=clean, corrupt=corrupt, good=good,
                         tokens_of_interest=torch.arange(YEAR0, YEAR0 + 100))

    def metric(self, logits: Tensor, batch: TaskBatch) -> Tensor:
        """Probability difference over the year tokens (Hanna et al.'s metric)."""
        p = logits.softmax(-1)[..., YEAR0:]
        good = batch.good[:, YEAR0:].to(p.dtype)
        return (p * (2 * good - 1)).sum(-1)

    def correct(self, logits: Tensor, batch: TaskBatch) -> Tensor:
        return batch.good.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1)

    def train_loss(self, logits: Tensor, tokens: Tensor, batch: TaskBatch) -> Tensor:
        """Cross-entropy against the uniform distribution over the later years."""
        logp = F.log_softmax(logits[:, -1], -1)
        target = batch.good.float()
        target = target / target.sum(-1, keepdim=True)
        return -(target * logp).sum(-1).mean()

    def token_names(self) -> list[str]:
        return WORDS + ["15", "16", "17", "18"] + [f"{y:02d}" for y in range(100)]


TASK = GreaterThan()
