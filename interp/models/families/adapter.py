"""What one model family's adapter provides: the hook table and the reader of the frozen network.

A `Family` says where every canonical hook lives in the Hugging Face module tree (for the torch
and nnsight backends) and reads the model's weights into the uniform description
`interp.models.transformer.Net` (for linearisation and attribution graphs). A family module
writes its per-block table as `{canonical suffix: at(module path, "in" | "out", **view)}` and
`hook_table` repeats it over the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.models.facts import ModelFacts
from interp.models.hookspec import HookPoint, point
from interp.models.transformer import Net

Spec = tuple[str, str, dict]


def at(module: str, io: str = "out", **view) -> Spec:
    """Where one hook lives: `module` relative to the block ("" is the block itself), its
    input or output, and `HookPoint` view options (index, heads, part, flat, writable ...)."""
    return (module, io, view)


def hook_table(n_layers: int, outer: Mapping[str, Spec], blocks: str, block: Mapping[str, Spec],
               final: str) -> dict[str, HookPoint]:
    """Every canonical hook of a model: `outer` (embeddings), `block` repeated over the blocks
    under the ModuleList `blocks`, then the final norm."""
    pts = [point(name, mod, io, None, **kw) for name, (mod, io, kw) in outer.items()]
    for i in range(n_layers):
        for suffix, (mod, io, kw) in block.items():
            path = f"{blocks}.{i}" + (f".{mod}" if mod else "")
            pts.append(point(f"blocks.{i}.{suffix}", path, io, i, **kw))
    pts.append(point("ln_final.hook_normalized", final, "out", n_layers))
    return {p.name: p for p in pts}


def _no_check(config) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """One model family (registered under each HF `model_type` it reads)."""

    name: str
    summary: str  # norms, positions, MLP and block wiring, in a line (the families table)
    blocks: str  # dotted path of the ModuleList of blocks
    final_norm: str  # dotted path of the final norm
    embed_hooks: Callable[[Any], Mapping[str, Spec]]  # config -> outer hooks
    block_hooks: Callable[[Any], Mapping[str, Spec]]  # config -> per-block hooks
    read: Callable[[Any, torch.dtype], Net]  # (HF model, dtype) -> the frozen network's weights
    tiny_config: Callable[..., Any]  # a small config of this family (tests, examples)
    check: Callable[[Any], None] = _no_check  # raises for configs the frozen network cannot run
    limits: str = ""  # what `check` refuses, in words (the families table)
    bridge_limits: str = ""  # configs TransformerLens's bridge does not open, in words
    #: canonical name suffix -> TransformerBridge name, where the bridge names the value otherwise
    bridge_names: Mapping[str, str] = field(default_factory=dict)

    def hooks(self, config) -> dict[str, HookPoint]:
        n_layers = ModelFacts.from_config("", config).n_layers
        return hook_table(n_layers, self.embed_hooks(config), self.blocks,
                          self.block_hooks(config), self.final_norm)


#: special token ids of the character tokenizer the tiny models use (interp.models.tiny)
TINY_IDS = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
