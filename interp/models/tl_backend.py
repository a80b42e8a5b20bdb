"""TransformerLens backend: a `TransformerBridge` booted on a copy of the Hugging Face model.

The bridge registers its own hook points under TransformerLens names, so most canonical names
pass straight through. Differences: the bridge's `ln*.hook_normalized` is the value before the
norm's weight (TransformerLens folds that weight into the next layer; the bridge does not),
while ours is what the next layer reads, the norm module's output, which the bridge calls
`ln*.hook_out`; a family adapter lists any other name the bridge spells differently. The table
keeps the names that fire in a one-token dry run. A model without an adapter (any causal LM
TransformerLens opens) gets the bridge's own hook names. It wraps a deep copy because booting
replaces the model's layers.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping

import torch

from interp.models.base import HookedModel
from interp.models.hookspec import HookPoint
from interp.models.layout import module_points

# canonical name suffix -> the bridge's name for the same value
_BRIDGE_NAMES = {"ln1.hook_normalized": "ln1.hook_out", "ln2.hook_normalized": "ln2.hook_out",
                 "ln_final.hook_normalized": "ln_final.hook_out"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def bridge_name(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The bridge's name for canonical `name`; `overrides`: a family's own differences
    (canonical suffix -> bridge suffix)."""
    table = {**_BRIDGE_NAMES, **(overrides or {})}
    m = _BLOCK.match(name)
    if m:
        return f"blocks.{m.group(1)}.{table[m.group(2)]}" if m.group(2) in table else name
    return table.get(name, name)


class TransformerLensHookedModel(HookedModel):
    backend = "transformer_lens"

    def __init__(self, hf_model, tokenizer, name: str):
        from transformer_lens.model_bridge import TransformerBridge

        self.bridge = TransformerBridge.boot_transformers(
            name, hf_model=copy.deepcopy(hf_model), tokenizer=tokenizer
        )
        self.bridge.eval()
        super().__init__(hf_model, tokenizer, name)

    def _fired(self, names: list[str]) -> list[str]:
        """The bridge hooks among `names` that fire on one token, in firing order."""
        names = [n for n in names if n in self.bridge.hook_dict]
        bos = self.bos_token_id if self.bos_token_id is not None else 0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # names gated off in the bridge are expected here
            _, cache = self.bridge.run_with_cache(torch.tensor([[bos]]), names_filter=names)
        return list(cache)

    def _hook_points(self) -> dict[str, HookPoint]:
        if self.family is None:  # no adapter: the bridge's own names, in firing order
            bos = self.bos_token_id if self.bos_token_id is not None else 0
            self.arch = module_points(self.hf_model, self.cfg.n_layers, bos)[1]
            points, in_blocks = {}, False
            for order, name in enumerate(self._fired(list(self.bridge.hook_dict))):
                m = _BLOCK.match(name)
                in_blocks = in_blocks or m is not None
                layer = int(m.group(1)) if m else (self.cfg.n_layers if in_blocks else None)
                points[name] = HookPoint(name=name, module=name, io="out", layer=layer,
                                         order=order)
            self._bridge = {n: n for n in points}
            return points
        points = super()._hook_points()
        self._bridge = {n: bridge_name(n, self.family.bridge_names) for n in points}
        fired = set(self._fired(sorted(set(self._bridge.values()))))
        return {n: p for n, p in points.items() if self._bridge[n] in fired}

    def _run(self, ids, mask, fwd_hooks, cache_names, stop_at_layer):
        def wrap(fn, point):
            return lambda x, hook: fn(x, point)

        b = self._bridge
        tl_hooks = [(b[n], wrap(fn, self.hook_points[n])) for n, fn in fwd_hooks]
        kwargs = {"attention_mask": mask} if mask is not None else {}
        with self.bridge.hooks(fwd_hooks=tl_hooks):
            if cache_names or stop_at_layer is not None:
                out, cache = self.bridge.run_with_cache(
                    ids, names_filter=[b[n] for n in cache_names],
                    stop_at_layer=stop_at_layer, **kwargs
                )
                cache = {n: cache[b[n]] for n in cache_names if b[n] in cache}
            else:
                out, cache = self.bridge(ids, **kwargs), {}
        logits = None if stop_at_layer is not None else out
        return logits, cache
