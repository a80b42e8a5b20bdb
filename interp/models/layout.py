"""The module layout of a model without a family adapter, found by one dry run.

nnsight names its hooks by raw module path when no adapter exists; `module_points` lists every
module whose output is a tensor in the order a one-token forward pass calls them, and finds the
ModuleList of blocks (for `stop_at_layer`) and the final norm (for lenses and logit effects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interp.models.hookspec import HookPoint


@dataclass(frozen=True)
class Layout:
    """Where the blocks and the final norm of a model without an adapter are (found, not known;
    `final_norm` is None when no norm runs after the last block)."""

    blocks: str
    final_norm: str | None


def module_points(hf_model, n_layers: int, bos: int) -> tuple[dict[str, HookPoint], Layout]:
    """A hook point per module whose output is a tensor (or a tuple starting with one), in the
    order one forward pass calls them; layers from the ModuleList of `n_layers` blocks."""
    lists = [(name, m) for name, m in hf_model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    blocks = max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))[0] \
        if lists else ""
    calls: list[str] = []
    handles = []

    def record(name):
        def hook(mod, args, out):
            x = out[0] if isinstance(out, tuple) and out else out
            if isinstance(x, Tensor) and name not in calls:
                calls.append(name)
        return hook

    try:
        for name, m in hf_model.named_modules():
            if name:
                handles.append(m.register_forward_hook(record(name)))
        with torch.no_grad():
            hf_model(input_ids=torch.tensor([[bos]], device=next(hf_model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    prefix = f"{blocks}." if blocks else None
    points, seen_block, final_norm = {}, False, None
    for order, name in enumerate(calls):
        layer = None
        if prefix and name.startswith(prefix):
            layer, seen_block = int(name[len(prefix):].split(".")[0]), True
        elif seen_block:
            layer = n_layers
            last = name.rsplit(".", 1)[-1].lower()
            if final_norm is None and ("norm" in last or last.startswith("ln")):
                final_norm = name
        points[name] = HookPoint(name=name, module=name, io="out", layer=layer, order=order)
    return points, Layout(blocks, final_norm)
