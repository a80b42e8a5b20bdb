"""Canonical (TransformerLens-style) hook names and where they live in a Hugging Face model.

Layers are counted from 0. Names follow TransformerLens: `hook_embed`, `blocks.{L}.hook_resid_pre`,
`blocks.{L}.ln1.hook_normalized`, `blocks.{L}.attn.hook_{q,k,v,z,pattern}`, `blocks.{L}.hook_attn_out`,
`blocks.{L}.hook_resid_mid`, `blocks.{L}.ln2.hook_normalized`, `blocks.{L}.mlp.hook_in`,
`blocks.{L}.mlp.hook_pre` (gate pre-activation), `blocks.{L}.mlp.hook_pre_linear` (gated models),
`blocks.{L}.mlp.hook_post` (input of the output projection), `blocks.{L}.hook_mlp_out`,
`blocks.{L}.hook_resid_post`, `ln_final.hook_normalized`.

Each architecture is one function in `ARCHITECTURES` (a registry keyed by HF `model_type`) that
maps every canonical name to a `HookPoint`: a module path, whether the value is the module's input
or output, and how to view it (split heads). One table serves the torch and nnsight backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from interp.errors import HookNotFound, ModelLoadError, unknown_name_message

# Position of each per-block hook in the execution order of a block.
_BLOCK_ORDER = {
    "hook_resid_pre": 0, "ln1.hook_normalized": 1, "attn.hook_q": 2, "attn.hook_k": 3,
    "attn.hook_v": 4, "attn.hook_z": 5, "attn.hook_pattern": 6, "hook_attn_out": 7,
    "hook_resid_mid": 8, "ln2.hook_normalized": 9, "mlp.hook_in": 10, "mlp.hook_pre": 11,
    "mlp.hook_pre_linear": 12, "mlp.hook_post": 13, "hook_mlp_out": 14, "hook_resid_post": 15,
}


@dataclass(frozen=True)
class HookPoint:
    """Where a canonical hook lives: `module` (dotted path), its input or output, and a view.

    `index` picks an element when the module returns a tuple (attention weights are element 1).
    `heads` splits the last dimension into [heads, d_head]. `writable` is False for values that
    can be read at that module but whose replacement would not reach the rest of the network.
    """

    name: str
    module: str
    io: Literal["in", "out"]
    layer: int | None  # block index; None for embeddings, len(blocks) for the final norm
    order: int
    index: int = 0
    heads: int | None = None
    writable: bool = True
    batch_broadcast: bool = False  # the module returns batch size 1 (position embeddings)


@dataclass(frozen=True)
class Architecture:
    """Module paths of one model family, and the function listing its hook points."""

    blocks: str  # dotted path of the ModuleList of blocks
    final_norm: str
    hooks: Callable[[object], dict[str, HookPoint]]


def _point(name: str, module: str, io: str, layer: int | None, **kw) -> HookPoint:
    sub = name.split(".", 2)[2] if name.startswith("blocks.") else None
    if sub is not None:
        order = 100 * (layer + 1) + _BLOCK_ORDER[sub]
    else:
        order = 0 if layer is None else 100 * (layer + 1)
    return HookPoint(name=name, module=module, io=io, layer=layer, order=order, **kw)


def _llama_hooks(config) -> dict[str, HookPoint]:
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    L = config.num_hidden_layers
    pts = [_point("hook_embed", "model.embed_tokens", "out", None)]
    for i in range(L):
        b, blk = f"blocks.{i}.", f"model.layers.{i}"
        pts += [
            _point(b + "hook_resid_pre", blk, "in", i),
            _point(b + "ln1.hook_normalized", blk + ".input_layernorm", "out", i),
            _point(b + "attn.hook_q", blk + ".self_attn.q_proj", "out", i, heads=n_heads),
            _point(b + "attn.hook_k", blk + ".self_attn.k_proj", "out", i, heads=n_kv),
            _point(b + "attn.hook_v", blk + ".self_attn.v_proj", "out", i, heads=n_kv),
            _point(b + "attn.hook_pattern", blk + ".self_attn", "out", i, index=1, writable=False),
            _point(b + "attn.hook_z", blk + ".self_attn.o_proj", "in", i, heads=n_heads),
            _point(b + "hook_attn_out", blk + ".self_attn", "out", i),
            _point(b + "hook_resid_mid", blk + ".post_attention_layernorm", "in", i, writable=False),
            _point(b + "ln2.hook_normalized", blk + ".post_attention_layernorm", "out", i),
            _point(b + "mlp.hook_in", blk + ".mlp", "in", i),
            _point(b + "mlp.hook_pre", blk + ".mlp.gate_proj", "out", i),
            _point(b + "mlp.hook_pre_linear", blk + ".mlp.up_proj", "out", i),
            _point(b + "mlp.hook_post", blk + ".mlp.down_proj", "in", i),
            _point(b + "hook_mlp_out", blk + ".mlp", "out", i),
            _point(b + "hook_resid_post", blk, "out", i),
        ]
    pts.append(_point("ln_final.hook_normalized", "model.norm", "out", L))
    return {p.name: p for p in pts}


def _gpt2_hooks(config) -> dict[str, HookPoint]:
    L = config.n_layer
    pts = [_point("hook_embed", "transformer.wte", "out", None),
           _point("hook_pos_embed", "transformer.wpe", "out", None, batch_broadcast=True)]
    for i in range(L):
        b, blk = f"blocks.{i}.", f"transformer.h.{i}"
        pts += [
            _point(b + "hook_resid_pre", blk, "in", i),
            _point(b + "ln1.hook_normalized", blk + ".ln_1", "out", i),
            _point(b + "attn.hook_pattern", blk + ".attn", "out", i, index=1, writable=False),
            _point(b + "attn.hook_z", blk + ".attn.c_proj", "in", i, heads=config.n_head),
            _point(b + "hook_attn_out", blk + ".attn", "out", i),
            _point(b + "hook_resid_mid", blk + ".ln_2", "in", i, writable=False),
            _point(b + "ln2.hook_normalized", blk + ".ln_2", "out", i),
            _point(b + "mlp.hook_in", blk + ".mlp", "in", i),
            _point(b + "mlp.hook_pre", blk + ".mlp.c_fc", "out", i),
            _point(b + "mlp.hook_post", blk + ".mlp.c_proj", "in", i),
            _point(b + "hook_mlp_out", blk + ".mlp", "out", i),
            _point(b + "hook_resid_post", blk, "out", i),
        ]
    pts.append(_point("ln_final.hook_normalized", "transformer.ln_f", "out", L))
    return {p.name: p for p in pts}


_LLAMA = Architecture("model.layers", "model.norm", _llama_hooks)
_GPT2 = Architecture("transformer.h", "transformer.ln_f", _gpt2_hooks)

#: HF `model_type` -> architecture. Adding a family means one function and one line here.
ARCHITECTURES: dict[str, Architecture] = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "olmo": _LLAMA,
    "gpt2": _GPT2,
}


def architecture_for(config) -> Architecture:
    """The registered architecture of an HF config, or a clear error listing the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(unknown_name_message(
            "model architecture", str(model_type), ARCHITECTURES,
            hint=f"Supported: {', '.join(sorted(ARCHITECTURES))}. Add one in "
                 "interp/models/hookspec.py (one function and one registry line).",
        ))
    return ARCHITECTURES[model_type]


def validate_hook_names(names: Iterable[str], points: dict[str, HookPoint]) -> list[str]:
    """Check each name exists; raise `HookNotFound` listing the closest valid names."""
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
