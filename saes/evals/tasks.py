"""Labelled example sets cut from `EvalData`, and a dictionary's features on them.

An example is either one token (its activation vector) or one window (the mean over its
positions 1.., as SAEBench pools sequences). Binary tasks are balanced the way SAEBench builds
them: as many negatives as positives, sampled with a seed, train and test from disjoint
documents. Latents of a window are the mean of the latents of its tokens, so everything linear in
the latents (mean differences, ablations) commutes with the pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saes.evals.context import encode_rows, pooled_latents
from saes.evals.data import EvalData

#: tasks need at least this many examples of each class in train and in test
MIN_PER_CLASS = 8


@dataclass
class Examples:
    """`index` points at flat token positions (level "token") or windows (level "window")."""

    name: str
    level: str
    index: Tensor
    y: Tensor
    doc: Tensor
    train: Tensor  # bool

    def __len__(self) -> int:
        return int(self.index.numel())

    def subset(self, mask: Tensor) -> Examples:
        return Examples(self.name, self.level, self.index[mask], self.y[mask], self.doc[mask],
                        self.train[mask])


def _balanced(pos: Tensor, neg: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    m = min(len(pos), len(neg), n)
    pos = pos[torch.randperm(len(pos), generator=g)[:m]]
    neg = neg[torch.randperm(len(neg), generator=g)[:m]]
    return pos, neg


def binary_examples(name: str, level: str, index: Tensor, y: Tensor, doc: Tensor, test: Tensor,
                    n_train: int, n_test: int, seed: int = 0) -> Examples | None:
    """Balanced binary examples (None if a class is too rare): `index`, `y` (0/1), `doc` and
    `test` (bool) describe the candidates."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for is_train, split, n in ((True, ~test, n_train), (False, test, n_test)):
        pos, neg = _balanced(torch.nonzero(split & (y == 1)).flatten(),
                             torch.nonzero(split & (y == 0)).flatten(), n // 2, g)
        if len(pos) < MIN_PER_CLASS:
            return None
        parts.append((torch.cat([pos, neg]), is_train))
    idx = torch.cat([p for p, _ in parts])
    train = torch.cat([torch.full((len(p),), tr) for p, tr in parts])
    return Examples(name, level, index[idx], y[idx], doc[idx], train)


def token_candidates(data: EvalData, task: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(flat position, label, doc, window) of every token the task labels, in the windows of
    the corpus it is meant for."""
    lab = data.labels[task]
    W, T = lab.shape
    corpus = data.task_corpus.get(task)
    windows = data.source_mask(corpus) if corpus in data.cfg.sources else torch.ones(W, dtype=bool)
    mask = (lab >= 0) & windows[:, None]
    mask[:, 0] = False
    flat = torch.nonzero(mask.reshape(-1)).flatten()
    w = flat // T
    return flat, lab.reshape(-1)[flat], data.doc[w], w


def token_task(data: EvalData, task: str, positive: int, n_train: int, n_test: int,
               test_windows: Tensor, seed: int = 0, negative: int | None = None,
               name: str | None = None) -> Examples | None:
    """Class `positive` of a labelling task against the rest (or against class `negative`)."""
    flat, lab, doc, w = token_candidates(data, task)
    keep = torch.ones_like(lab, dtype=torch.bool) if negative is None else (
        (lab == positive) | (lab == negative))
    y = (lab == positive).long()
    return binary_examples(name or f"{task}:{data.classes[task][positive]}", "token", flat[keep],
                           y[keep], doc[keep], test_windows[w][keep], n_train, n_test, seed)


def source_task(data: EvalData, n_train: int, n_test: int, test_windows: Tensor,
                seed: int = 0) -> Examples | None:
    """Windows of the second source (the standard library's code) against the first (the
    documentation), mean-pooled: SAEBench's sequence-level probing on our corpus."""
    idx = torch.arange(data.n_windows)
    return binary_examples("source:code_vs_docs", "window", idx, (data.source == 1).long(),
                           data.doc, test_windows, n_train, n_test, seed)


def raw_features(data: EvalData, ex: Examples) -> Tensor:
    """Activation vectors of the examples ([n, d]; windows pooled over positions 1..)."""
    if ex.level == "window":
        return data.acts[ex.index, 1:].mean(1)
    return data.acts.reshape(-1, data.d)[ex.index]


def latent_features(sae, data: EvalData, ex: Examples, cols: Tensor | None = None,
                    batch: int = 2048) -> Tensor:
    """The dictionary's latents on the examples (only columns `cols` if given)."""
    out = []
    for i in range(0, len(ex), batch):
        idx = ex.index[i:i + batch]
        if ex.level == "window":
            z = pooled_latents(sae, data.acts[idx])
        else:
            z = encode_rows(sae, data.acts.reshape(-1, data.d)[idx])
        out.append(z if cols is None else z[:, cols])
    return torch.cat(out)


def class_means(sae, data: EvalData, ex: Examples, mask: Tensor, batch: int = 2048
                ) -> tuple[Tensor, Tensor]:
    """Mean latent vector over the positive and the negative examples under `mask`
    (accumulated in batches, so [n, d_sae] is never held)."""
    sub = ex.subset(mask)
    pos = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    neg = torch.zeros_like(pos)
    for i in range(0, len(sub), batch):
        part = Examples(sub.name, sub.level, sub.index[i:i + batch], sub.y[i:i + batch],
                        sub.doc[i:i + batch], sub.train[i:i + batch])
        z = latent_features(sae, data, part).double()
        pos += z[part.y == 1].sum(0)
        neg += z[part.y == 0].sum(0)
    n1 = max(1, int((sub.y == 1).sum()))
    n0 = max(1, int((sub.y == 0).sum()))
    return pos / n1, neg / n0
