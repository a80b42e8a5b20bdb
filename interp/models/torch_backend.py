"""The default backend: plain PyTorch forward hooks on the Hugging Face model.

It adds nothing to the forward pass but the hooks asked for, and stops it early by raising from a
pre-hook on the first block that is not needed (the fastest capture path measured on this
machine: 2.1-2.45x a full forward when caching a middle layer).
"""

from __future__ import annotations

from torch import Tensor

from interp.errors import HookNotWritable
from interp.models.base import HookedModel, HookFn
from interp.models.hookspec import HookPoint


class _StopForward(Exception):
    """Raised by a pre-hook to end the forward pass once every needed hook has fired."""


def _raise_stop(module, args):
    raise _StopForward


class TorchHookedModel(HookedModel):
    backend = "torch"

    def __init__(self, hf_model, tokenizer, name: str):
        super().__init__(hf_model, tokenizer, name)
        self._modules = dict(hf_model.named_modules())

    def _call(self, point: HookPoint, fn: HookFn, x: Tensor) -> Tensor | None:
        """Run a hook on the viewed value; return its replacement in the module's layout."""
        new = fn(self._view(point, x), point)
        if new is None:
            return None
        if not point.writable:
            raise HookNotWritable(f"Hook {point.name!r} is read-only.")
        return self._unview(point, new, x)

    def _attach(self, point: HookPoint, fn: HookFn):
        module = self._modules[point.module]
        if point.io == "out":
            def out_hook(mod, args, output):
                is_tuple = isinstance(output, tuple)
                x = output[point.index] if is_tuple else output
                new = self._call(point, fn, x)
                if new is None:
                    return None
                if is_tuple:
                    return output[: point.index] + (new,) + output[point.index + 1:]
                return new
            return module.register_forward_hook(out_hook)

        def in_hook(mod, args, kwargs):
            key = None
            if args:
                x = args[0]
            else:
                key = "hidden_states" if "hidden_states" in kwargs else next(
                    k for k, v in kwargs.items() if isinstance(v, Tensor))
                x = kwargs[key]
            new = self._call(point, fn, x)
            if new is None:
                return None
            if key is None:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, key: new}
        return module.register_forward_pre_hook(in_hook, with_kwargs=True)

    def _run(self, ids, mask, fwd_hooks, cache_names, stop_at_layer):
        cache: dict[str, Tensor] = {}
        self._batch_shape = tuple(ids.shape[:2])

        def save(x: Tensor, point: HookPoint):
            cache[point.name] = x if x.requires_grad else x.detach()

        handles = []
        try:
            for name, fn in fwd_hooks:
                handles.append(self._attach(self.hook_points[name], fn))
            for name in cache_names:
                handles.append(self._attach(self.hook_points[name], save))
            if stop_at_layer is not None:
                target = (self._modules[f"{self.arch.blocks}.{stop_at_layer}"]
                          if stop_at_layer < self.cfg.n_layers else self._modules[self.arch.final_norm])
                handles.append(target.register_forward_pre_hook(_raise_stop))
            try:
                logits = self.hf_model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            except _StopForward:
                logits = None
        finally:
            for h in handles:
                h.remove()
        return logits, cache
