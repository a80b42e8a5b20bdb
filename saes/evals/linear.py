"""The linear probes SAEBench's metrics are built on, in torch (no scikit-learn here).

- `fit_logistic`: binary logistic regression with scikit-learn's default objective
  (sum of log-losses + ||w||^2 / (2C), unpenalised bias, C = 1), solved by Newton's method in
  float64; `class_weight="balanced"` weighs each class by n / (2 n_class) as scikit-learn
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
                 max_iter: int = 50, class_weight: str | None = None) -> LinearProbe:
    """Binary L2-regularised logistic regression (see module docstring), by Newton's method
    with a backtracking line search (the objective is strictly convex; a few iterations reach
    the optimum, where L-BFGS needs hundreds of autograd calls on these small problems)."""
    _check(x, y)
    X = torch.cat([x.detach().double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    t = y.detach().double()
    s = torch.ones_like(t)
    if class_weight == "balanced":
        n1 = float(t.sum())
        n0 = float(len(t) - n1)
        if n0 and n1:
            s = torch.where(t > 0.5, len(t) / (2 * n1), len(t) / (2 * n0))
    elif class_weight is not None:
        raise ConfigError(f"class_weight must be None or 'balanced', not {class_weight!r}.")
    d = X.shape[1]
    reg = torch.full((d,), 1 / C, dtype=torch.float64)
    reg[-1] = 0.0  # the bias is not penalised

    def loss(theta):
        return float((s * F.softplus(X @ theta) - s * t * (X @ theta)).sum()
                     + 0.5 * (reg * theta * theta).sum())

    theta = torch.zeros(d, dtype=torch.float64)
    f = loss(theta)
    for _ in range(max_iter):
        p = torch.sigmoid(X @ theta)
        g = X.T @ (s * (p - t)) + reg * theta
        if float(g.abs().max()) < 1e-8:
            break
        H = (X * (s * p * (1 - p))[:, None]).T @ X + torch.diag(reg + 1e-9)
        step = torch.linalg.solve(H, g)
        lr, slope = 1.0, float(g @ step)
        while lr > 1e-10:
            f_new = loss(theta - lr * step)
            if f_new <= f - 1e-4 * lr * slope:
                break
            lr /= 2
        theta = theta - lr * step
        if abs(f - f_new) < 1e-12 * max(1.0, abs(f)):
            f = f_new
            break
        f = f_new
    return LinearProbe(weight=theta[:-1].float(), bias=float(theta[-1]))


def fit_probe_sgd(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], epochs: int = 20,
                  batch_size: int = 16, lr: float = 1e-3, l1: float = 1e-3, seed: int = 0,
                  reference: bool = False) -> LinearProbe:
    """SAEBench's SCR/TPP probe recipe (see module docstring): torch's AdamW (betas 0.9 /
    0.999, eps 1e-8, weight decay 0.01) on mean BCE + l1 * |w|_1. The update is written out by
    hand (analytic gradients, no autograd or optimiser objects: ~20x faster on these tiny
    batches); `reference=True` runs the same steps with autograd and `torch.optim.AdamW`."""
    _check(x, y)
    g = torch.Generator().manual_seed(seed)
    X, t = x.detach().float(), y.detach().float()
    n, d = X.shape
    bound = 1 / d ** 0.5  # nn.Linear's init, drawn from the seeded generator
    w = torch.empty(d).uniform_(-bound, bound, generator=g)
    b = torch.empty(1).uniform_(-bound, bound, generator=g)
    orders = [torch.randperm(n, generator=g) for _ in range(epochs)]
    if reference:
        return _sgd_reference(X, t, w, b, orders, batch_size, lr, l1)
    beta1, beta2, eps, wd = 0.9, 0.999, 1e-8, 0.01
    mw, vw, mb, vb = torch.zeros(d), torch.zeros(d), torch.zeros(1), torch.zeros(1)
    step = 0
    for order in orders:
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb = X[idx]
            r = (torch.sigmoid(xb @ w + b) - t[idx]) / len(idx)  # d(mean BCE)/d(score)
            gw = xb.T @ r + l1 * torch.sign(w)
            gb = r.sum().reshape(1)
            step += 1
            c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
            for p, gp, m, v in ((w, gw, mw, vw), (b, gb, mb, vb)):
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_(gp, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(gp, gp, value=1 - beta2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-lr / c1)
    return LinearProbe(weight=w, bias=float(b[0]))


def _sgd_reference(X, t, w, b, orders, batch_size, lr, l1) -> LinearProbe:
    lin = torch.nn.Linear(X.shape[1], 1)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.copy_(b)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr)
    with torch.enable_grad():
        for order in orders:
            for i in range(0, len(t), batch_size):
                idx = order[i:i + batch_size]
                loss = F.binary_cross_entropy_with_logits(lin(X[idx]).squeeze(-1), t[idx])
                if l1:
                    loss = loss + l1 * lin.weight.abs().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
    return LinearProbe(weight=lin.weight.detach()[0].clone(), bias=float(lin.bias.detach()[0]))


def fit_multi_probe(x: Float[Tensor, "n d"], y: Float[Tensor, "n c"], epochs: int = 50,
                    batch_size: int = 4096, lr: float = 1e-2, end_lr: float = 1e-5,
                    weight_decay: float = 1e-6, l1: float = 0.0, seed: int = 0,
                    reference: bool = False
                    ) -> tuple[Float[Tensor, "c d"], Float[Tensor, " c"]]:
    """One-vs-rest logistic probes for c classes trained together: Adam (L2 `weight_decay`
    added to the gradient) with an exponential learning-rate decay from `lr` to `end_lr`,
    mean BCE with pos_weight = n_neg / n_pos per class, plus `l1` times the mean over classes
    of the L1 norm of the weights. Returns (W, b). SAEBench's batch of 4096 meets tens of
    thousands of words; on smaller sets the batch shrinks so an epoch still takes about ten
    steps. The steps are written out by hand (analytic gradients); `reference=True` runs them
    with autograd, `torch.optim.Adam` and `ExponentialLR`."""
    X, Y = x.detach().float(), y.detach().float()
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ConfigError(f"Need x [n, d] and y [n, c]; got {tuple(X.shape)}, {tuple(Y.shape)}.")
    g = torch.Generator().manual_seed(seed)
    n, c = Y.shape
    batch_size = min(batch_size, max(16, -(-n // 10)))  # small sets: >= 10 steps per epoch
    pos = Y.sum(0).clamp_min(1)
    pos_weight = (n - pos) / pos
    bound = 1 / X.shape[1] ** 0.5
    W = torch.empty(c, X.shape[1]).uniform_(-bound, bound, generator=g)
    b = torch.empty(c).uniform_(-bound, bound, generator=g)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    gamma = (end_lr / lr) ** (1 / max(1, steps))
    orders = [torch.randperm(n, generator=g) for _ in range(epochs)]
    if reference:
        return _multi_reference(X, Y, W, b, orders, batch_size, lr, gamma, weight_decay, l1,
                                pos_weight)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    state = [(torch.zeros_like(W), torch.zeros_like(W)), (torch.zeros_like(b),
                                                          torch.zeros_like(b))]
    step, cur = 0, lr
    for order in orders:
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = X[idx], Y[idx]
            s = torch.sigmoid(xb @ W.T + b)
            dz = (s * (pos_weight * yb + 1 - yb) - pos_weight * yb) / yb.numel()
            gW = dz.T @ xb + weight_decay * W
            if l1:
                gW = gW + (l1 / c) * torch.sign(W)
            gb = dz.sum(0) + weight_decay * b
            step += 1
            c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
            for p, gp, (m, v) in ((W, gW, state[0]), (b, gb, state[1])):
                m.mul_(beta1).add_(gp, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(gp, gp, value=1 - beta2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-cur / c1)
            cur *= gamma
    return W, b


def _multi_reference(X, Y, W, b, orders, batch_size, lr, gamma, weight_decay, l1, pos_weight):
    lin = torch.nn.Linear(X.shape[1], Y.shape[1])
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    with torch.enable_grad():
        for order in orders:
            for i in range(0, len(X), batch_size):
                idx = order[i:i + batch_size]
                loss = F.binary_cross_entropy_with_logits(lin(X[idx]), Y[idx],
                                                          pos_weight=pos_weight)
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
