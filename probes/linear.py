"""Linear probes: logistic (softmax) regression and ridge classifiers on activations.

Alain & Bengio, "Understanding intermediate layers using linear classifier probes"
(arXiv 1610.01644); control tasks and selectivity from Hewitt & Liang, "Designing and
Interpreting Probes with Control Tasks" (arXiv 1909.03368).

- Rows are split into train and validation **by document** (`split_by_document`), never by
  token: neighbouring tokens of one document are not independent.
- The L2 strength is chosen on a selection split of the *training* documents (again by document);
  the probe is then refitted on all training rows and scored once on validation.
- A control task is reported beside each probe: `"type"` gives every token type a random label
  drawn from the real label distribution (Hewitt & Liang: a probe that memorises token identity
  scores well here, so selectivity = real - control measures what is not identity); `"shuffle"`
  permutes the labels over rows (nothing to learn: held-out accuracy stays at chance).
Features are standardised with the training rows' mean and std; returned weights are mapped
back to the raw activation space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import ConfigError, InterpError

PROBE_KINDS = ("logistic", "ridge")
CONTROLS = ("type", "shuffle", "none")
DEFAULT_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class ProbeResult:
    """A fitted probe and its scores. `weight` [d, classes] and `bias` act on raw activations."""

    weight: Float[Tensor, "d classes"]
    bias: Float[Tensor, " classes"]
    l2: float
    train_acc: float
    val_acc: float
    majority_acc: float  # validation accuracy of always predicting the most frequent train class
    n_train: int
    n_val: int

    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        return (x.float() @ self.weight + self.bias).argmax(-1)


def split_by_document(doc: Int[Tensor, " n"], val_frac: float = 0.2, seed: int = 0
                      ) -> Tensor:
    """Boolean mask of validation rows: a seeded random `val_frac` of the documents (>= 1)."""
    if not 0 < val_frac < 1:
        raise ConfigError(f"val_frac must be in (0, 1), got {val_frac}.")
    docs = torch.unique(doc)
    if docs.numel() < 2:
        raise InterpError("A split by document needs at least 2 documents; collect more text.")
    g = torch.Generator().manual_seed(seed)
    n_val = min(docs.numel() - 1, max(1, round(val_frac * docs.numel())))
    val_docs = docs[torch.randperm(docs.numel(), generator=g)[:n_val]]
    return torch.isin(doc, val_docs)


def control_labels(labels: Int[Tensor, " n"], tokens: Int[Tensor, " n"], kind: str = "type",
                   seed: int = 0) -> Int[Tensor, " n"]:
    """Labels of a control task (see the module docstring); -1 rows stay -1."""
    if kind not in CONTROLS:
        raise ConfigError(f"control must be one of {CONTROLS}, not {kind!r}.")
    g = torch.Generator().manual_seed(seed)
    out = labels.clone()
    have = labels >= 0
    if kind == "none":
        return out
    if kind == "shuffle":
        out[have] = labels[have][torch.randperm(int(have.sum()), generator=g)]
        return out
    types, inverse = torch.unique(tokens[have], return_inverse=True)
    # draw each type's label from the empirical label distribution of the real task
    probs = torch.bincount(labels[have]).double()
    drawn = torch.multinomial(probs / probs.sum(), types.numel(), replacement=True, generator=g)
    out[have] = drawn[inverse]
    return out


def _standardise(x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    mu = x[rows].mean(0)
    sd = x[rows].std(0).clamp_min(1e-6)
    return mu, sd


def _fit_logistic(z: Tensor, y: Tensor, n_classes: int, l2: float, max_iter: int,
                  init: Tensor | None = None) -> Tensor:
    """Softmax regression by full-batch L-BFGS; returns [d + 1, classes] (last row: bias)."""
    zb = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], 1)
    w = (init.clone() if init is not None else torch.zeros(zb.shape[1], n_classes,
                                                             dtype=z.dtype)).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(zb @ w, y) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def _fit_ridge(z: Tensor, y: Tensor, n_classes: int, l2s: list[float]) -> list[Tensor]:
    """Ridge regression on one-hot targets for each L2 value (one eigendecomposition)."""
    mu_y = torch.nn.functional.one_hot(y, n_classes).to(z.dtype)
    zc_mean = z.mean(0)
    zc = z - zc_mean
    t_mean = mu_y.mean(0)
    evals, evecs = torch.linalg.eigh(zc.T @ zc)
    proj = evecs.T @ (zc.T @ (mu_y - t_mean))
    out = []
    for l2 in l2s:
        w = evecs @ (proj / (evals + l2 * z.shape[0])[:, None])
        b = t_mean - zc_mean @ w
        out.append(torch.cat([w, b[None]], 0))
    return out


def _acc(z: Tensor, y: Tensor, wb: Tensor) -> float:
    if y.numel() == 0:
        return float("nan")
    return float(((z @ wb[:-1] + wb[-1]).argmax(-1) == y).float().mean())


def fit_probe(x: Float[Tensor, "n d"], labels: Int[Tensor, " n"], doc: Int[Tensor, " n"],
              kind: str = "logistic", l2_grid: tuple[float, ...] = DEFAULT_L2,
              val_frac: float = 0.2, seed: int = 0, max_iter: int = 100,
              n_classes: int | None = None) -> ProbeResult:
    """Fit a probe on training documents, choose L2 on held-out training documents, score on
    validation documents. Rows with label -1 are ignored."""
    if kind not in PROBE_KINDS:
        raise ConfigError(f"probe kind must be one of {PROBE_KINDS}, not {kind!r}.")
    if x.ndim != 2 or x.shape[0] != labels.shape[0] or doc.shape[0] != labels.shape[0]:
        raise InterpError(f"fit_probe needs x [n, d], labels [n] and doc [n]; got "
                          f"{tuple(x.shape)}, {tuple(labels.shape)}, {tuple(doc.shape)}.")
    have = labels >= 0
    # ridge solves normal equations (float64); L-BFGS is iterative and fine in float32
    x = x[have].to(torch.float64 if kind == "ridge" else torch.float32)
    labels, doc = labels[have], doc[have]
    if labels.numel() == 0:
        raise InterpError("No labelled rows to probe: the task labelled no token of this text.")
    n_classes = n_classes or int(labels.max()) + 1
    val = split_by_document(doc, val_frac, seed)
    train = ~val
    sel = torch.zeros_like(train)  # selection split inside the training documents
    sel[train] = split_by_document(doc[train], 0.25, seed + 1)
    fit_rows = train & ~sel
    mu, sd = _standardise(x, fit_rows)
    z = (x - mu) / sd
    if kind == "ridge":
        cands = _fit_ridge(z[fit_rows], labels[fit_rows], n_classes, list(l2_grid))
    else:
        cands, prev = [], None
        for l2 in sorted(l2_grid, reverse=True):  # warm start from the stronger penalty
            prev = _fit_logistic(z[fit_rows], labels[fit_rows], n_classes, l2, max_iter, prev)
            cands.append(prev)
        l2_grid = tuple(sorted(l2_grid, reverse=True))
    scores = [_acc(z[sel], labels[sel], wb) for wb in cands]
    best = max(range(len(scores)), key=lambda i: (scores[i], l2_grid[i]))  # ties: stronger L2
    l2 = float(l2_grid[best])
    mu, sd = _standardise(x, train)
    z = (x - mu) / sd
    if kind == "ridge":
        wb = _fit_ridge(z[train], labels[train], n_classes, [l2])[0]
    else:
        wb = _fit_logistic(z[train], labels[train], n_classes, l2, max_iter, cands[best])
    majority = int(torch.bincount(labels[train], minlength=n_classes).argmax())
    weight = wb[:-1] / sd[:, None]
    bias = wb[-1] - mu @ weight
    return ProbeResult(weight=weight.float(), bias=bias.float(), l2=l2,
                       train_acc=_acc(z[train], labels[train], wb),
                       val_acc=_acc(z[val], labels[val], wb),
                       majority_acc=float((labels[val] == majority).float().mean()),
                       n_train=int(train.sum()), n_val=int(val.sum()))


def activation_pattern(weight: Float[Tensor, "d classes"], x: Float[Tensor, "n d"]
                       ) -> Float[Tensor, "d classes"]:
    """The direction each class is *encoded* along, Σ_x w (Haufe et al. 2014, NeuroImage 87):
    a decoder's weights also cancel correlated noise, so the planted direction of a concept is
    recovered by the covariance times the weights, not by the weights themselves."""
    xc = x.double() - x.double().mean(0)
    return ((xc.T @ (xc @ weight.double())) / max(1, x.shape[0] - 1)).float()


def probe_layers(acts: dict[str, Tensor], labels: Tensor, doc: Tensor, tokens: Tensor,
                 kind: str = "logistic", control: str = "type", l2_grid=DEFAULT_L2,
                 val_frac: float = 0.2, seed: int = 0, max_iter: int = 100,
                 progress: bool = False) -> tuple[list[dict], dict[str, ProbeResult]]:
    """One probe (and one control probe) per hook: a table row per hook and the fitted probes.

    Each row: hook, val_acc, train_acc, control_acc, selectivity (val - control), majority_acc,
    l2, n_train, n_val.
    """
    from tqdm.auto import tqdm

    n_classes = int(labels.max()) + 1 if (labels >= 0).any() else 0
    ctrl = control_labels(labels, tokens, control, seed) if control != "none" else None
    rows, fitted = [], {}
    for hook, x in tqdm(acts.items(), desc="probes", disable=not progress):
        res = fit_probe(x, labels, doc, kind, l2_grid, val_frac, seed, max_iter, n_classes)
        row = {"hook": hook, "val_acc": res.val_acc, "train_acc": res.train_acc,
               "majority_acc": res.majority_acc, "l2": res.l2, "n_train": res.n_train,
               "n_val": res.n_val}
        if ctrl is not None:
            c = fit_probe(x, ctrl, doc, kind, l2_grid, val_frac, seed, max_iter, n_classes)
            row["control_acc"] = c.val_acc
            row["selectivity"] = res.val_acc - c.val_acc
        rows.append(row)
        fitted[hook] = res
    return rows, fitted
