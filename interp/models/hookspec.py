"""Canonical (TransformerLens-style) hook names and where a hook lives in a Hugging Face model.

Layers are counted from 0. Names follow TransformerLens: `hook_embed`, `hook_pos_embed`,
`blocks.{L}.hook_resid_pre`, `blocks.{L}.ln1.hook_normalized`, `blocks.{L}.attn.hook_{q,k,v,z,pattern}`,
`blocks.{L}.hook_attn_out` (what attention adds to the residual stream, a post-attention norm
included), `blocks.{L}.hook_resid_mid`, `blocks.{L}.ln2.hook_normalized`, `blocks.{L}.mlp.hook_in`,
`blocks.{L}.mlp.hook_pre` (gate pre-activation), `blocks.{L}.mlp.hook_pre_linear` (gated models),
`blocks.{L}.mlp.hook_post` (input of the output projection), `blocks.{L}.hook_mlp_out` (what the MLP
adds, a post-MLP norm included), `blocks.{L}.hook_resid_post`, `ln_final.hook_normalized`.

A `HookPoint` says where one name is read: a module path, its input or output, and how to view the
value (a slice of a fused projection, split heads, an unflattened batch). Each model family's
adapter (`interp.models.families`) builds the table; the torch and nnsight backends read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from interp.errors import HookNotFound

#: Position of each per-block hook in the execution order of a block.
BLOCK_ORDER = {
    "hook_resid_pre": 0, "ln1.hook_normalized": 1, "attn.hook_q": 2, "attn.hook_k": 3,
    "attn.hook_v": 4, "attn.hook_z": 5, "attn.hook_pattern": 6, "hook_attn_out": 7,
    "hook_resid_mid": 8, "ln2.hook_normalized": 9, "mlp.hook_in": 10, "mlp.hook_pre": 11,
    "mlp.hook_pre_linear": 12, "mlp.hook_post": 13, "hook_mlp_out": 14, "hook_resid_post": 15,
}


@dataclass(frozen=True)
class HookPoint:
    """Where a canonical hook lives: `module` (dotted path), its input or output, and a view.

    `index` picks an element when the module returns a tuple (attention weights are element 1).
    `part` = (start, stop) slices the last dimension (one of a fused projection's outputs, as
    Phi-3's `qkv_proj`), within each of `part_groups` equal groups when set (GPT-NeoX interleaves
    q, k, v per head). `heads` splits the last dimension into [heads, d_head]. `flat`: the module
    sees [batch * pos, ...] (OPT's MLP) and the hook [batch, pos, ...]. `writable` is False for
    values that can be read at that module but whose replacement would not reach the rest of the
    network.
    """

    name: str
    module: str
    io: Literal["in", "out"]
    layer: int | None  # block index; None for embeddings, n_layers for the final norm
    order: int
    index: int = 0
    heads: int | None = None
    writable: bool = True
    batch_broadcast: bool = False  # the module returns batch size 1 (position embeddings)
    part: tuple[int, int] | None = None
    part_groups: int | None = None
    flat: bool = False


def point(name: str, module: str, io: str, layer: int | None, **kw) -> HookPoint:
    """A HookPoint with its execution order derived from the canonical name and layer."""
    sub = name.split(".", 2)[2] if name.startswith("blocks.") else None
    if sub is not None:
        order = 100 * (layer + 1) + BLOCK_ORDER.get(sub, 50)
    else:
        order = 0 if layer is None else 100 * (layer + 1)
    if name == "hook_pos_embed":
        order = 1
    return HookPoint(name=name, module=module, io=io, layer=layer, order=order, **kw)


def validate_hook_names(names: Iterable[str], points: dict[str, HookPoint]) -> list[str]:
    """Check each name exists; raise `HookNotFound` listing the closest valid names."""
    from interp.errors import unknown_name_message

    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in points:
            raise HookNotFound(unknown_name_message(
                "hook", name, points, hint="List them with `interp models` or model.hook_names()."
            ))
    return names


def execution_order(names: Iterable[str], points: dict[str, HookPoint]) -> list[str]:
    """Names sorted in the order the forward pass reaches them (needed by nnsight)."""
    return sorted(set(names), key=lambda n: (points[n].order, n))
