"""Reading singular vectors as tokens (Golden, arXiv 2505.24293, §3.3; the analyses in
docs/linearise.md).

A left singular vector u lives in the output space: its sign is aligned with the output
(usign = sign(ŷ · u)) and usign · W_U u ranks output tokens. For an intermediate residual site the
final norm's weight is applied first (its scale is a positive scalar, which leaves the ranking
alone), logit-lens style. A right singular vector v lives in input-embedding space, [pos, d]:
its largest-norm position is decoded to the nearest rows of the token-embedding matrix by cosine
similarity, after multiplying by usign.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.models.transformer import Net


def output_logits(net: Net, u: Tensor, final_applied: bool) -> Tensor:
    """Unembedding scores of output-space directions u [..., d] (final norm weight if needed)."""
    if not final_applied:
        u = u * net.final.weight
        if net.final.kind == "layer":
            u = u - u.mean(-1, keepdim=True)
    return u.to(net.unembed.dtype) @ net.unembed.T


def decode_left(net: Net, U: Tensor, y: Tensor, tokenizer, top: int = 8,
                final_applied: bool = True) -> list[dict]:
    """Per column of U [d, k]: sign (w.r.t. y) and the top tokens of usign · W_U u."""
    signs = torch.sign(y.to(U.dtype) @ U)
    signs[signs == 0] = 1
    logits = output_logits(net, (U * signs).T, final_applied)  # [k, vocab]
    vals, idx = logits.topk(top, dim=-1)
    return [{"sign": int(signs[j]), "token_ids": idx[j].tolist(),
             "tokens": [tokenizer.decode([int(t)]) for t in idx[j]],
             "scores": [round(float(v), 5) for v in vals[j]]} for j in range(U.shape[1])]


def decode_right(net: Net, V: Tensor, signs: list[int], tokenizer, top: int = 8) -> list[dict]:
    """Per row of V [k, pos, d]: its largest-norm position and the nearest input tokens there."""
    emb = net.token_embeddings
    emb_n = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = []
    for j in range(V.shape[0]):
        norms = V[j].norm(dim=-1)
        p = int(norms.argmax())
        vec = V[j, p].to(emb.dtype) * signs[j]
        cos = emb_n @ (vec / vec.norm().clamp_min(1e-12))
        vals, idx = cos.topk(top)
        out.append({"position": p, "position_share": round(float(norms[p] ** 2 / (norms ** 2).sum()), 5),
                    "token_ids": idx.tolist(), "tokens": [tokenizer.decode([int(t)]) for t in idx],
                    "cosines": [round(float(v), 5) for v in vals]})
    return out
