"""Exhaustive activation patching: the reference every other method approximates.

Each unit (edge, or component) is ablated alone and the drop in the metric is its score,
m(M) - m(M with the unit ablated) (Vig et al. 2020; Meng et al. 2022; as the "exact" scores
of EAP-IG's code). One forward pass per unit in principle; here the units entering the same
layer run as one batch that starts from the shared clean run at that layer.
"""

from __future__ import annotations

import time

from circuits.discovery.context import PatchContext
from circuits.discovery.result import MethodResult


def run(ctx: PatchContext) -> MethodResult:
    """Patching effects of every unit at the context's level, plus every component's."""
    t0 = time.perf_counter()
    scores = ctx.patch_effects(ctx.level)
    comp = scores if ctx.level == "node" else ctx.patch_effects("node")
    return MethodResult("patching", ctx.level, scores, comp, time.perf_counter() - t0)
