"""Induction: "... A B ... A" -> B, in a 2-layer attention-only transformer.

The circuit planted by training (Olsson et al. 2022, arXiv 2209.11895; the ACDC induction task,
arXiv 2304.14997): a previous-token head in layer 0 writes each position's predecessor into
its residual stream; an induction head in layer 1 matches the current token against those
predecessors (its key input reads the previous-token head) and copies the token that followed
(its value input reads the embedding). Prompts are BOS then L (3..8) distinct random tokens
repeated cyclically to 16 tokens (repeated random tokens, as in ACDC's induction task), so only
induction predicts the next token, at a period no position can stand for; the counterfactual
is a fresh prompt of distinct tokens (nothing repeats). Metric: the answer's logit minus the
mean logit. Training uses the same sequences, with the loss at every position after the first
period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.tasks.base import Task, TaskBatch, TrainSettings
from circuits.tasks.model import TinyConfig

PROMPT_LEN = 16
BOS = 0


@dataclass
class Induction(Task):
    name: str = "induction"
    description: str = "repeated random tokens: A B C ... A B -> C"
    model_cfg: TinyConfig = field(default_factory=lambda: TinyConfig(
        n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=0, d_vocab=64, n_ctx=PROMPT_LEN + 1))
    train_settings: TrainSettings = field(default_factory=lambda: TrainSettings(
        steps=3000, batch_size=64, lr=5e-3))
    accuracy_target: float = 0.9
    planted: tuple[str, ...] = ("a0.h2", "a1.h1")
    other_init: float = 0.3

    def batch(self, n: int, seed: int) -> TaskBatch:
        toks, _ = self.cyclic(n, seed)
        return TaskBatch(clean=toks[:, :PROMPT_LEN], corrupt=self.distinct(n, seed, PROMPT_LEN),
                         answer=toks[:, PROMPT_LEN])

    def distinct(self, n: int, seed: int, length: int) -> Tensor:
        """Counterfactuals: BOS then distinct random tokens (nothing to copy)."""
        g = torch.Generator().manual_seed(seed + 7_777_777)
        V = self.model_cfg.d_vocab
        out = torch.stack([torch.randperm(V - 1, generator=g)[:length] + 1 for _ in range(n)])
        out[:, 0] = BOS
        return out

    def cyclic(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """[n, PROMPT_LEN + 1] tokens that cycle through L (3..8) distinct random tokens after
        BOS, and the positions whose next token the cycle determines (every one after the first
        period): many induction targets per sequence, at a period no position can stand for."""
        g = torch.Generator().manual_seed(seed)
        V, P = self.model_cfg.d_vocab, PROMPT_LEN
        toks = torch.zeros(n, P + 1, dtype=torch.long)
        predictable = torch.zeros(n, P + 1, dtype=torch.bool)
        for i in range(n):
            L = int(torch.randint(3, 9, (1,), generator=g))
            seg = torch.randperm(V - 1, generator=g)[:L] + 1
            toks[i, 1:] = seg.repeat(P // L + 1)[:P]
            predictable[i, L + 1:P] = True
        return toks, predictable

    def train_batch(self, n: int, seed: int):
        toks, pred = self.cyclic(n, seed)
        return toks, TaskBatch(clean=toks, corrupt=self.distinct(n, seed, PROMPT_LEN + 1),
                               answer=toks[:, -1], good=pred)

    def train_loss(self, logits: Tensor, tokens: Tensor, batch: TaskBatch) -> Tensor:
        """Next-token loss at every position the repeat makes predictable."""
        mask = batch.good[:, :-1]
        return F.cross_entropy(logits[:, :-1][mask], tokens[:, 1:][mask])

    def token_names(self) -> list[str]:
        return ["<bos>"] + [f"t{i}" for i in range(1, self.model_cfg.d_vocab)]


TASK = Induction()
