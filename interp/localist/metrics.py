"""Locality metrics of attention patterns, the group-lasso penalty, and language-model scores.

Definitions (the reconstruction in docs/localist.md, "The method", labelled "Localist-style"):

- attention entropy of query i, in bits: H_i = -sum_j a_ij log2 a_ij, bounded by log2 of the
  number of keys i can see (log2(i + 1) under a causal mask without padding);
- pointer fidelity (mass): F_i = sum_{j in B_g(i)} a_ij, the attention mass on the target block;
  pointer fidelity (argmax): 1 if argmax_j a_ij lies in the target block, else 0;
- group-lasso penalty (Yuan & Lin 2006, applied to one query's attention over blocks):
  Omega_i = sum_{g != g(i)} sqrt(|B_g|) * ||a_{i,B_g}||_2. With these weights a uniform pattern
  scores its off-target mass, and all mass on the target block scores 0.

Patterns are `[batch, head, query, key]` (rows sum to 1 over visible keys).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

_LN2 = math.log(2.0)
_EPS = 1e-12


def entropy_bits(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, "batch head query"]:
    """Shannon entropy of each query's attention distribution, in bits (0 log 0 = 0)."""
    p = pattern.float()
    return -torch.special.xlogy(p, p).sum(-1) / _LN2


def visible_keys(n_query: int, n_key: int, key_mask: Tensor | None = None
                 ) -> Float[Tensor, "batch query"]:
    """How many keys each query can see: causal (key <= query), and not padding when
    `key_mask` ([batch, key], 1 = real token) is given. Shape [1, query] without a mask."""
    causal = torch.ones(n_query, n_key, dtype=torch.bool).tril(n_key - n_query)
    if key_mask is None:
        return causal.sum(-1).float()[None]
    vis = causal[None] & key_mask.bool()[:, None, :].cpu()
    return vis.sum(-1).float()


def pointer_fidelity(pattern: Float[Tensor, "batch head query key"],
                     tmask: Bool[Tensor, "batch query key"]) -> Float[Tensor, "batch head query"]:
    """Attention mass on the target block (the "mass" variant of pointer fidelity)."""
    return (pattern.float() * tmask[:, None].to(pattern.device, torch.float32)).sum(-1)


def pointer_hit(pattern: Float[Tensor, "batch head query key"],
                tmask: Bool[Tensor, "batch query key"]) -> Float[Tensor, "batch head query"]:
    """1.0 where the most-attended key is in the target block (the "argmax" variant)."""
    top = pattern.argmax(-1)  # [b, h, q]
    tm = tmask[:, None].expand(-1, pattern.shape[1], -1, -1).to(pattern.device)
    return tm.gather(-1, top.unsqueeze(-1)).squeeze(-1).float()


def group_lasso(pattern: Float[Tensor, "batch head query key"], blocks: Int[Tensor, "batch key"],
                targets: Int[Tensor, "batch query"], query_mask: Tensor | None = None
                ) -> Float[Tensor, ""]:
    """Mean over (batch, head, query) of the group-lasso penalty on off-target blocks.

    Differentiable in `pattern`; sqrt(x + eps) - sqrt(eps) keeps the gradient finite at zero.
    """
    B, H, Q, K = pattern.shape
    G = int(blocks.max()) + 1
    onehot = F.one_hot(blocks, G).to(pattern.dtype)  # [b, k, g]
    group_sq = torch.einsum("bhqk,bkg->bhqg", pattern * pattern, onehot)
    norms = (group_sq + _EPS).sqrt() - math.sqrt(_EPS)
    weights = onehot.sum(1).sqrt()  # [b, g]: sqrt of the block size
    off = targets[:, :, None] != torch.arange(G, device=targets.device)  # [b, q, g]
    per_query = (norms * weights[:, None, None, :] * off[:, None].to(pattern.dtype)).sum(-1)
    if query_mask is None:
        return per_query.mean()
    qm = query_mask[:, None, :].to(per_query.dtype).expand_as(per_query)
    return (per_query * qm).sum() / qm.sum().clamp_min(1.0)


class LocalityMeter:
    """Accumulates per-layer, per-head entropy/fidelity and next-token loss over batches.

    `update_attention(layer, pattern, tmask, query_mask)` for each layer's pattern;
    `update_lm(logits, ids, mask)` for the language-model scores; `result()` gives means.
    """

    def __init__(self) -> None:
        self.sums: dict[int, dict[str, Tensor]] = {}
        self.count: dict[int, Tensor] = {}
        self.bound_sum = 0.0
        self.bound_n = 0
        self.max_excess = -math.inf  # max over queries of H_i - log2(visible_i): must be <= 0
        self.nll = 0.0
        self.correct = 0
        self.n_tokens = 0

    @torch.no_grad()
    def update_attention(self, layer: int, pattern: Tensor, tmask: Tensor,
                         query_mask: Tensor | None = None, key_mask: Tensor | None = None) -> None:
        B, H, Q, K = pattern.shape
        qm = torch.ones(B, Q) if query_mask is None else query_mask.float().cpu()
        ent = entropy_bits(pattern).cpu()
        bound = visible_keys(Q, K, key_mask).log2().expand(B, Q)
        stats = {"entropy": ent, "fidelity": pointer_fidelity(pattern, tmask).cpu(),
                 "fidelity_argmax": pointer_hit(pattern, tmask).cpu()}
        w = qm[:, None, :]
        acc = self.sums.setdefault(layer, {k: torch.zeros(H, dtype=torch.float64) for k in stats})
        for k, v in stats.items():
            acc[k] += (v * w).sum((0, 2)).double()
        self.count[layer] = self.count.get(layer, 0) + qm.sum().double()
        if layer == min(self.sums):
            self.bound_sum += float((bound * qm).sum())
            self.bound_n += float(qm.sum())
        excess = (ent - bound[:, None, :]).masked_fill(~qm.bool()[:, None, :], -math.inf)
        self.max_excess = max(self.max_excess, float(excess.max()))

    @torch.no_grad()
    def update_lm(self, logits: Float[Tensor, "batch pos vocab"], ids: Int[Tensor, "batch pos"],
                  mask: Tensor | None = None) -> None:
        lp = logits[:, :-1].float().log_softmax(-1)
        nxt = ids[:, 1:].to(lp.device)
        valid = torch.ones_like(nxt, dtype=torch.bool) if mask is None else mask[:, 1:].bool()
        nll = -lp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
        self.nll += float(nll[valid].sum())
        self.correct += int((lp.argmax(-1) == nxt)[valid].sum())
        self.n_tokens += int(valid.sum())

    def result(self) -> dict:
        """Means: overall (`entropy_bits`, `entropy_bound_bits`, `fidelity`, `fidelity_argmax`,
        `perplexity`, `accuracy`) and per layer x head lists (`per_head`)."""
        out: dict = {}
        if self.sums:
            layers = sorted(self.sums)
            per = {k: torch.stack([self.sums[layer][k] / self.count[layer] for layer in layers])
                   for k in ("entropy", "fidelity", "fidelity_argmax")}
            out.update({
                "entropy_bits": float(per["entropy"].mean()),
                "entropy_bound_bits": self.bound_sum / max(self.bound_n, 1),
                "entropy_max_excess_bits": self.max_excess,
                "fidelity": float(per["fidelity"].mean()),
                "fidelity_argmax": float(per["fidelity_argmax"].mean()),
                "per_head": {"layers": layers,
                             **{k: per[k].tolist() for k in per}},
            })
        if self.n_tokens:
            loss = self.nll / self.n_tokens
            out.update({"loss": loss, "perplexity": math.exp(loss),
                        "accuracy": self.correct / self.n_tokens, "tokens": self.n_tokens})
        return out
