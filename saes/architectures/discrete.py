"""Discrete-code SAE for circuit identification.

O'Neill & Bui, "Sparse Autoencoders Enable Scalable and Reliable Circuit Identification in
Language Models" (arXiv 2405.12522). An SAE is trained on a component's output (e.g. one
attention head) for positive prompts (the model predicts the next token correctly) and negative
prompts (it cannot). Its representation is discretised into integer codes: the code of an input
is the index of its most active latent. A head whose positive examples produce codes that never
occur on negative examples is engaged in the task, so the share of such codes ranks heads.

Here the SAE is a TopK SAE (arXiv 2406.04093) trained as such; `codes` returns the k most
active latent indices (k = 1 is the paper's code) and `code_overlap` compares two sets of
codes. Exported as SAELens "topk" (same encode/decode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saes.architectures.topk import TopKSAE


@dataclass(frozen=True)
class CodeOverlap:
    """Codes seen on positive examples but never on negative ones.

    unique: the set of such codes (each a sorted tuple of latent ids);
    share: len(unique) / number of distinct positive codes;
    example_share: fraction of positive examples whose code is in `unique`.
    """

    unique: frozenset[tuple[int, ...]]
    share: float
    example_share: float


class DiscreteSAE(TopKSAE):
    """TopK SAE whose inputs are summarised by integer codes (their top latents)."""

    architecture = "discrete"

    @torch.no_grad()
    def codes(self, x: Float[Tensor, "... d_in"]) -> Int[Tensor, "... k"]:
        """Indices of the k most active latents, ordered by activation (descending)."""
        return self.pre_acts(x).topk(self.cfg.k, dim=-1, sorted=True).indices


def _code_set(codes: Tensor) -> list[tuple[int, ...]]:
    """One order-free code (sorted tuple of latent ids) per example."""
    codes = torch.as_tensor(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    codes = codes.reshape(-1, codes.shape[-1])
    return [tuple(sorted(row)) for row in codes.tolist()]


def code_overlap(codes_pos: Int[Tensor, "n_pos k"], codes_neg: Int[Tensor, "n_neg k"]
                 ) -> CodeOverlap:
    """The codes unique to positive examples, and their share (the paper's head score).

    A code with k > 1 latents is compared as a set (the sorted tuple of its latent ids).
    """
    pos, neg = _code_set(codes_pos), set(_code_set(codes_neg))
    distinct = set(pos)
    unique = frozenset(distinct - neg)
    share = len(unique) / len(distinct) if distinct else 0.0
    example_share = sum(c in unique for c in pos) / len(pos) if pos else 0.0
    return CodeOverlap(unique=unique, share=share, example_share=example_share)
