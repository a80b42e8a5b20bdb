"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG).

EAP (Nanda 2023; Syed et al. 2023, arXiv 2310.10348) linearises patching: the score of edge
u -> v is (z_u^clean - z_u^ablated) . dm/d(in_v), the gradient taken on the clean run; all
edges come from one forward and one backward pass. EAP-IG (Hanna et al. 2024, "Have Faith in
Faithfulness", arXiv 2403.17806) averages that gradient over m points on the straight line
from the ablated to the clean input embedding, alpha = k / m for k = 0..m-1 (the inputs
variant of their code), which follows the metric's curvature where a single gradient is
misleading. `interpolate="mask"` instead averages the gradient of the metric with respect to
every edge's mask at masks k / m, k = 0..m (auto-circuit's integrated mask gradient).
Node scores are sums of outgoing edge scores (exactly node-level EAP).
"""

from __future__ import annotations

import time

from circuits.discovery.context import PatchContext
from circuits.discovery.result import MethodResult
from interp.errors import ConfigError


def _result(name: str, ctx: PatchContext, scores, seconds: float, extra: dict) -> MethodResult:
    comp = ctx.graph.node_scores_from_edges(scores) if ctx.level == "edge" else scores
    return MethodResult(name, ctx.level, scores, comp, seconds, extra=extra)


def run_eap(ctx: PatchContext) -> MethodResult:
    """EAP: one gradient at the clean run."""
    t0 = time.perf_counter()
    scores = ctx.gradient_scores((1.0,), "inputs")
    return _result("eap", ctx, scores, time.perf_counter() - t0, {})


def ig_alphas(steps: int, interpolate: str) -> list[float]:
    if steps < 1:
        raise ConfigError(f"EAP-IG needs steps >= 1, got {steps}.")
    if interpolate == "inputs":
        return [k / steps for k in range(steps)]
    return [1 - k / steps for k in range(steps + 1)]


def run_eap_ig(ctx: PatchContext, steps: int = 5, interpolate: str = "inputs") -> MethodResult:
    """EAP-IG with `steps` interpolation points (see the module docstring)."""
    t0 = time.perf_counter()
    scores = ctx.gradient_scores(ig_alphas(steps, interpolate), interpolate)
    return _result("eap-ig", ctx, scores, time.perf_counter() - t0,
                   {"steps": steps, "interpolate": interpolate})
