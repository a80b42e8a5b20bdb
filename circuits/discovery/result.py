"""What a discovery method returns: unit scores at its level, component scores, its time."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class MethodResult:
    """Scores of one method on one context.

    level: 'edge' or 'node' (what `scores` scores); component_scores: one per component (heads
    and MLPs, the graph's `components` order), the scale a ground truth of heads is compared
    on; selected: the method's own circuit over components where it has one (the discrete
    method's heads with positive-only codes, ACDC's circuit at its default threshold), else
    None; seconds: wall time of the method itself (the shared clean/corrupt forward passes
    of the context excluded); extra: method-specific details (JSON-serialisable).
    """

    method: str
    level: str
    scores: Tensor
    component_scores: Tensor
    seconds: float
    selected: Tensor | None = None
    extra: dict = field(default_factory=dict)

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        out = {f"{prefix}scores": self.scores.float().clone(),  # (node methods: one tensor)
               f"{prefix}component_scores": self.component_scores.float().clone()}
        if self.selected is not None:
            out[f"{prefix}selected"] = self.selected.to(torch.uint8).contiguous()
        return out
