"""TransformerLens backend: a `TransformerBridge` booted on a copy of the Hugging Face model.

The bridge registers its own hook points under the same TransformerLens names, so most canonical
names pass straight through. One difference: the bridge's `ln*.hook_normalized` is the value
before the norm's weight (TransformerLens folds that weight into the next layer; the bridge does
not), while ours is what the next layer reads, the norm module's output, which the bridge calls
`ln*.hook_out`. It wraps a deep copy because booting replaces the model's layers.
"""

from __future__ import annotations

import copy

from interp.models.base import HookedModel

# canonical name suffix -> the bridge's name for the same value
_BRIDGE_NAMES = {"ln1.hook_normalized": "ln1.hook_out", "ln2.hook_normalized": "ln2.hook_out",
                 "ln_final.hook_normalized": "ln_final.hook_out"}


def bridge_name(name: str) -> str:
    head, _, tail = name.rpartition(".ln")
    key = "ln" + tail
    if head and key in _BRIDGE_NAMES:
        return f"{head}.{_BRIDGE_NAMES[key]}"
    return _BRIDGE_NAMES.get(name, name)


class TransformerLensHookedModel(HookedModel):
    backend = "transformer_lens"

    def __init__(self, hf_model, tokenizer, name: str):
        super().__init__(hf_model, tokenizer, name)
        from transformer_lens.model_bridge import TransformerBridge

        self.bridge = TransformerBridge.boot_transformers(
            name, hf_model=copy.deepcopy(hf_model), tokenizer=tokenizer
        )
        self.bridge.eval()
        known = set(self.bridge.hook_dict)
        # Keep only the names the bridge really has for this architecture.
        self.hook_points = {n: p for n, p in self.hook_points.items() if bridge_name(n) in known}

    def _run(self, ids, mask, fwd_hooks, cache_names, stop_at_layer):
        def wrap(fn, point):
            return lambda x, hook: fn(x, point)

        tl_hooks = [(bridge_name(n), wrap(fn, self.hook_points[n])) for n, fn in fwd_hooks]
        kwargs = {"attention_mask": mask} if mask is not None else {}
        with self.bridge.hooks(fwd_hooks=tl_hooks):
            if cache_names or stop_at_layer is not None:
                out, cache = self.bridge.run_with_cache(
                    ids, names_filter=[bridge_name(n) for n in cache_names],
                    stop_at_layer=stop_at_layer, **kwargs
                )
                cache = {n: cache[bridge_name(n)] for n in cache_names if bridge_name(n) in cache}
            else:
                out, cache = self.bridge(ids, **kwargs), {}
        logits = None if stop_at_layer is not None else out
        return logits, cache
