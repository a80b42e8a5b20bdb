"""The linear probes SAEBench's metrics are built on, in torch (no scikit-learn here).

- `fit_logistic`: binary logistic regression with scikit-learn's default objective
  (sum of log-losses + ||w||^2 / (2C), unpenalised bias, C = 1), solved with full-batch L-BFGS
  in float64; `class_weight="balanced"` weighs each class by n / (2 n_class) as scikit-learn
  does. Used by sparse probing (k selected latents) and absorption's k-sparse probes.
- `fit_probe_sgd`: SAEBench's SCR/TPP probe: a linear layer trained with AdamW on BCE with an
  L1 penalty on the weights, batch 16, lr 1e-3 for 20 epochs (its defaults); the small batch
  size is deliberate (it sets how much of a spurious signal the probe picks up).
- `fit_multi_probe`: one-vs-rest logistic probes for many classes at once (Adam on BCE with
  positive-class weights, an optional L1 term), as SAEBench's absorption probes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import ConfigError


@dataclass
class LinearProbe:
    """score(x) = x @ weight + bias; predicts class 1 where the score is > 0."""

    weight: Float[Tensor, " d"]
    bias: float

    def score(self, x: Tensor) -> Tensor:
        return x.to(self.weight.dtype) @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        return (self.score(x) > 0).long()

    def correct(self, x: Tensor, y: Tensor) -> Tensor:
        """Float 0/1 per example (for bootstrapping the accuracy)."""
        return (self.predict(x) == y.long()).double()


def _check(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(f"A probe needs x [n, d] and y [n] with n >= 1; got {tuple(x.shape)} "
                          f"and {tuple(y.shape)}.")


def fit_logistic(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], C: float = 1.0,
                 max_iter: int = 200, class_weight: str | None = None) -> LinearProbe:
    """Binary L2-regularised logistic regression (see module docstring)."""
    _check(x, y)
    X = x.detach().double()
    t = y.detach().double()
    w_row = torch.ones_like(t)
    if class_weight == "balanced":
        n1 = float(t.sum())
        n0 = float(len(t) - n1)
        if n0 and n1:
            w_row = torch.where(t > 0.5, len(t) / (2 * n1), len(t) / (2 * n0))
    elif class_weight is not None:
        raise ConfigError(f"class_weight must be None or 'balanced', not {class_weight!r}.")
    params = torch.zeros(X.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        logits = X @ params[:-1] + params[-1]
        loss = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * w_row).sum()
        loss = loss + (params[:-1] ** 2).sum() / (2 * C)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    p = params.detach()
    return LinearProbe(weight=p[:-1].float(), bias=float(p[-1]))


def fit_probe_sgd(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], epochs: int = 20,
                  batch_size: int = 16, lr: float = 1e-3, l1: float = 1e-3, seed: int = 0
                  ) -> LinearProbe:
    """SAEBench's SCR/TPP probe recipe (see module docstring)."""
    _check(x, y)
    g = torch.Generator().manual_seed(seed)
    X, t = x.detach().float(), y.detach().float()
    lin = torch.nn.Linear(X.shape[1], 1)
    with torch.no_grad():  # a seeded init (nn.Linear would draw from the global generator)
        bound = 1 / X.shape[1] ** 0.5
        lin.weight.uniform_(-bound, bound, generator=g)
        lin.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(t), generator=g)
            for i in range(0, len(t), batch_size):
                b = order[i:i + batch_size]
                loss = F.binary_cross_entropy_with_logits(lin(X[b]).squeeze(-1), t[b])
                if l1:
                    loss = loss + l1 * lin.weight.abs().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
    return LinearProbe(weight=lin.weight.detach()[0].clone(), bias=float(lin.bias.detach()[0]))


def fit_multi_probe(x: Float[Tensor, "n d"], y: Float[Tensor, "n c"], epochs: int = 50,
                    batch_size: int = 4096, lr: float = 1e-2, end_lr: float = 1e-5,
                    weight_decay: float = 1e-6, l1: float = 0.0, seed: int = 0
                    ) -> tuple[Float[Tensor, "c d"], Float[Tensor, " c"]]:
    """One-vs-rest logistic probes for c classes trained together: Adam with an exponential
    learning-rate decay from `lr` to `end_lr`, BCE with pos_weight = n_neg / n_pos per class,
    plus `l1` times the mean over classes of the L1 norm of the weights. Returns (W, b)."""
    X, Y = x.detach().float(), y.detach().float()
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ConfigError(f"Need x [n, d] and y [n, c]; got {tuple(X.shape)}, {tuple(Y.shape)}.")
    g = torch.Generator().manual_seed(seed)
    n, c = Y.shape
    pos = Y.sum(0).clamp_min(1)
    pos_weight = (n - pos) / pos
    lin = torch.nn.Linear(X.shape[1], c)
    with torch.no_grad():
        bound = 1 / X.shape[1] ** 0.5
        lin.weight.uniform_(-bound, bound, generator=g)
        lin.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    gamma = (end_lr / lr) ** (1 / max(1, steps))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for i in range(0, n, batch_size):
                b = order[i:i + batch_size]
                loss = F.binary_cross_entropy_with_logits(lin(X[b]), Y[b], pos_weight=pos_weight)
                if l1:
                    loss = loss + l1 * lin.weight.abs().sum(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return lin.weight.detach().clone(), lin.bias.detach().clone()


def f1_score(pred: Tensor, y: Tensor) -> float:
    """F1 of binary predictions (0 when there are no true or predicted positives)."""
    p, t = pred.bool(), y.bool()
    tp = float((p & t).sum())
    denom = float(p.sum() + t.sum())
    return 2 * tp / denom if denom else 0.0


def top_k_mean_diff(z: Float[Tensor, "n d"], y: Int[Tensor, " n"], k: int) -> Tensor:
    """SAEBench's sparse-probing selection: the k columns with the largest
    |mean over positives - mean over negatives| (on training rows)."""
    pos, neg = z[y == 1], z[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError("Top-k selection needs both classes in the training rows.")
    diff = (pos.double().mean(0) - neg.double().mean(0)).abs()
    return diff.argsort(descending=True, stable=True)[:min(k, z.shape[1])]
