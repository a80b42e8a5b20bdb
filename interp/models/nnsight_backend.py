"""nnsight backend: the Hugging Face model wrapped in `nnsight.LanguageModel`.

nnsight is imported only here (its import patches `sys.excepthook`). Values are read and written
in execution order inside one trace; the trace stops after the last needed value. A model
without a family adapter gets raw module paths as hook names (`model.layers.3.mlp`: that
module's output), in the order a one-token dry run calls them.
"""

from __future__ import annotations

from torch import Tensor

from interp.models.base import HookedModel
from interp.models.hookspec import HookPoint, execution_order
from interp.models.layout import module_points


class NNsightHookedModel(HookedModel):
    backend = "nnsight"

    def __init__(self, hf_model, tokenizer, name: str):
        super().__init__(hf_model, tokenizer, name)
        import warnings

        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LanguageModel's deprecation notice
            self.lm = LanguageModel(hf_model, tokenizer=tokenizer)

    def _hook_points(self) -> dict[str, HookPoint]:
        if self.family is not None:
            return super()._hook_points()
        bos = self.bos_token_id if self.bos_token_id is not None else 0
        points, self.arch = module_points(self.hf_model, self.cfg.n_layers, bos)
        return points

    def _envoy(self, path: str):
        env = self.lm
        for part in path.split("."):
            env = env[int(part)] if part.isdigit() else getattr(env, part)
        return env

    def _stop_module(self, stop_at_layer: int) -> str | None:
        if stop_at_layer < self.cfg.n_layers:
            return f"{self.arch.blocks}.{stop_at_layer}" if self.arch.blocks else None
        return self.arch.final_norm

    def _run(self, ids, mask, fwd_hooks, cache_names, stop_at_layer):
        points = self.hook_points
        hooks_by_name: dict[str, list] = {}
        for n, fn in fwd_hooks:
            hooks_by_name.setdefault(n, []).append(fn)
        order = execution_order([*hooks_by_name, *cache_names], points)
        stop_module = None if stop_at_layer is None else self._stop_module(stop_at_layer)
        cache: dict[str, Tensor] = {}
        self._batch_shape = tuple(ids.shape[:2])
        inputs = {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask}
        logits = None
        with self.lm.trace(inputs) as tracer:
            for name in order:
                point = points[name]
                env = self._envoy(point.module)
                raw = env.output if point.io == "out" else env.input
                is_tuple = isinstance(raw, tuple)
                x = raw[point.index] if is_tuple else raw
                for fn in hooks_by_name.get(name, []):
                    new = fn(self._view(point, x), point)
                    if new is not None:
                        x = self._unview(point, new, x)
                        if point.io == "in":
                            env.input = x
                        else:
                            env.output = (raw[: point.index] + (x,) + raw[point.index + 1:]
                                          if is_tuple else x)
                if name in cache_names:
                    cache[name] = self._view(point, x).save()
            if stop_module is not None:
                _ = self._envoy(stop_module).input
                tracer.stop()
            elif stop_at_layer is None:
                logits = self.lm.output.logits.save()
        return logits, dict(cache)
