"""IOI-style name moving: "A and B ... , B gave ... to" -> A, in a 2-layer attention-only model.

A small version of indirect object identification (Wang et al. 2022, arXiv 2211.00593): two
names, then one of them (the subject S) again, then "to"; the answer is the other name (the
indirect object IO). Names and the repeated subject sit at varying positions among filler
words, so no head can find them by position alone. The counterfactual is the "ABC" prompt of
the IOI paper: the repeated subject is replaced by a third name, so nothing tells IO from S.
Metric: logit(IO) - logit(S).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuits.tasks.base import Task, TaskBatch, TrainSettings
from circuits.tasks.model import TinyConfig

PROMPT_LEN = 12
BOS, AND, GAVE, TO = 0, 9, 10, 11
FILLERS = list(range(1, 9))
N_NAMES = 20
NAME0 = 12
WORDS = ["<bos>", "then", "the", "store", "went", "park", "a", "drink", "it", "and", "gave", "to"]
NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Ida", "Jon", "Kim", "Lea",
         "Max", "Ned", "Oli", "Pam", "Quin", "Ray", "Sam", "Tom"]


@dataclass
class IOI(Task):
    name: str = "ioi"
    description: str = "indirect object: A and B ..., B gave ... to -> A"
    model_cfg: TinyConfig = field(default_factory=lambda: TinyConfig(
        n_layers=2, n_heads=4, d_model=64, d_head=16, d_mlp=0, d_vocab=NAME0 + N_NAMES,
        n_ctx=PROMPT_LEN))
    train_settings: TrainSettings = field(default_factory=lambda: TrainSettings(
        steps=800, batch_size=64, lr=3e-3))
    accuracy_target: float = 0.9
    planted: tuple[str, ...] = ("a0.h1", "a1.h0", "a1.h3")

    def batch(self, n: int, seed: int) -> TaskBatch:
        g = torch.Generator().manual_seed(seed)
        clean = torch.zeros(n, PROMPT_LEN, dtype=torch.long)
        corrupt = torch.zeros_like(clean)
        io = torch.zeros(n, dtype=torch.long)
        s = torch.zeros(n, dtype=torch.long)
        fillers = torch.tensor(FILLERS)
        for i in range(n):
            row = fillers[torch.randint(0, len(FILLERS), (PROMPT_LEN,), generator=g)]
            row[0], row[-1] = BOS, TO
            names = torch.randperm(N_NAMES, generator=g)[:3] + NAME0
            p1 = int(torch.randint(1, 3, (1,), generator=g))
            ps = int(torch.randint(6, 9, (1,), generator=g))
            io_first = bool(torch.randint(0, 2, (1,), generator=g))
            a, b = (names[0], names[1]) if io_first else (names[1], names[0])
            row[p1], row[p1 + 1], row[p1 + 2] = a, AND, b
            row[ps], row[ps + 1] = names[1], GAVE  # names[1] is the subject
            clean[i] = row
            bad = row.clone()
            bad[ps] = names[2]
            corrupt[i] = bad
            io[i], s[i] = names[0], names[1]
        return TaskBatch(clean=clean, corrupt=corrupt, answer=io, distractor=s)

    def token_names(self) -> list[str]:
        return WORDS + NAMES


TASK = IOI()
