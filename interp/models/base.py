"""`HookedModel`: one interface over every backend (plain torch hooks, TransformerLens, nnsight).

A backend implements `_run(ids, mask, hooks, cache_names, stop_at_layer)`; everything else
(tokenising, name validation, the hooks context manager, `run_with_cache`) lives here once.

Hook functions have the TransformerLens signature `fn(tensor, hook) -> tensor | None`; `hook.name`
is the canonical name. Returning a tensor replaces the activation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import HookNotWritable, InterpError
from interp.models.facts import ModelFacts
from interp.models.families import family_for, find_family
from interp.models.hookspec import HookPoint, execution_order, validate_hook_names

HookFn = Callable[[Tensor, HookPoint], "Tensor | None"]
Inputs = "str | Sequence[str] | Tensor"


class HookedModel:
    """A causal LM with canonical hook names. Build one with `interp.load_model`."""

    backend: str = "abstract"

    def __init__(self, hf_model, tokenizer, name: str):
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.cfg = ModelFacts.from_config(name, hf_model.config)
        self.family = find_family(hf_model.config)  # None: no adapter (library backends only)
        self.arch = self.family  # its module layout: `.blocks`, `.final_norm`
        self._batch_shape: tuple[int, int] = (1, 1)  # of the running forward (flat hooks)
        self.hook_points: dict[str, HookPoint] = self._hook_points()
        self._active: list[tuple[str, HookFn]] = []

    def _hook_points(self) -> dict[str, HookPoint]:
        """The canonical hook table: the family adapter's (backends may add their own)."""
        return family_for(self.hf_model.config, f"the {self.backend} backend").hooks(
            self.hf_model.config)

    # ----------------------------------------------------------------- facts and names
    def hook_names(self) -> list[str]:
        """Every canonical hook name of this model, in execution order."""
        return execution_order(self.hook_points, self.hook_points)

    def validate_hooks(self, names) -> list[str]:
        return validate_hook_names(names, self.hook_points)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    def __repr__(self) -> str:
        c = self.cfg
        return (f"HookedModel({self.name!r}, backend={self.backend!r}, n_layers={c.n_layers}, "
                f"d_model={c.d_model}, d_vocab={c.d_vocab})")

    # ----------------------------------------------------------------- tokens
    @property
    def bos_token_id(self) -> int | None:
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def to_tokens(self, inputs, prepend_bos: bool = True
                  ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"] | None]:
        """Token ids (and an attention mask when strings of different lengths are padded right).

        Strings get exactly one BOS in front when `prepend_bos` (TransformerLens's default);
        a tensor of ids is used as given.
        """
        if isinstance(inputs, Tensor):
            ids = inputs if inputs.ndim == 2 else inputs.unsqueeze(0)
            return ids.to(self.device, torch.long), None
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise InterpError("No inputs given: pass a string, a list of strings or token ids.")
        seqs = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        bos = self.bos_token_id
        if prepend_bos and bos is not None:
            seqs = [[bos] + list(s) for s in seqs]
        if any(len(s) == 0 for s in seqs):
            raise InterpError("An input tokenises to zero tokens; pass non-empty text.")
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        mask = None if bool(mask.all()) else mask.to(self.device)
        return ids.to(self.device), mask

    def to_string(self, ids: Tensor) -> str | list[str]:
        if ids.ndim <= 1:
            return self.tokenizer.decode(ids.reshape(-1).tolist())
        return [self.tokenizer.decode(row.tolist()) for row in ids]

    def to_str_tokens(self, ids: Tensor) -> list[str]:
        """One decoded string per token of a 1-D id tensor."""
        return [self.tokenizer.decode([int(t)]) for t in ids.reshape(-1)]

    # ----------------------------------------------------------------- running
    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[HookedModel]:
        """Attach hooks for the duration of a `with` block; they are removed even on error."""
        fwd_hooks = list(fwd_hooks)
        self.validate_hooks([n for n, _ in fwd_hooks])
        for name, _ in fwd_hooks:
            self._check_writable(name)
        n_before = len(self._active)
        self._active.extend(fwd_hooks)
        try:
            yield self
        finally:
            del self._active[n_before:]

    def _check_writable(self, name: str) -> None:
        if not self.hook_points[name].writable:
            raise HookNotWritable(
                f"Hook {name!r} can be read but not replaced on this model (its value is read at "
                f"{self.hook_points[name].module!r}, and a new value would not reach the rest of "
                "the network). Hook the value it comes from instead, or return None to only read."
            )

    def forward(self, inputs, attention_mask: Tensor | None = None, prepend_bos: bool = True
                ) -> Float[Tensor, "batch pos vocab"]:
        """Logits for `inputs`, with any hooks attached by `hooks()` applied."""
        ids, mask = self.to_tokens(inputs, prepend_bos)
        logits, _ = self._run(ids, attention_mask if attention_mask is not None else mask,
                              list(self._active), [], None)
        return logits

    __call__ = forward

    def run_with_hooks(self, inputs, fwd_hooks: Sequence[tuple[str, HookFn]], **kw) -> Tensor:
        with self.hooks(fwd_hooks):
            return self.forward(inputs, **kw)

    def run_with_cache(
        self, inputs, hooks: Sequence[str] | str | None = None, stop_at_layer: int | str | None = None,
        attention_mask: Tensor | None = None, prepend_bos: bool = True, grad: bool = False,
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Run the model and return `(logits or None, {hook name: activation})`.

        `hooks` lists the names to cache (all when None). `stop_at_layer=k` runs blocks 0..k-1
        only (TransformerLens semantics) and returns None for the logits; `stop_at_layer="auto"`
        stops right after the deepest cached hook's block. Runs under no_grad unless `grad`.
        """
        names = self.hook_names() if hooks is None else self.validate_hooks(hooks)
        if stop_at_layer == "auto":
            stop_at_layer = self.stop_layer_for(names)
        if stop_at_layer is not None and not 0 <= stop_at_layer <= self.cfg.n_layers:
            raise InterpError(f"stop_at_layer={stop_at_layer} is outside 0..{self.cfg.n_layers}.")
        if stop_at_layer is not None:
            late = [n for n in names if _depth(self.hook_points[n]) >= stop_at_layer]
            if late:
                raise InterpError(f"Hooks {late} would not fire before the forward pass stops "
                                  f"(stop_at_layer={stop_at_layer} runs blocks "
                                  f"0..{stop_at_layer - 1}); raise stop_at_layer or use 'auto'.")
        ids, mask = self.to_tokens(inputs, prepend_bos)
        mask = attention_mask if attention_mask is not None else mask
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx:
            logits, cache = self._run(ids, mask, list(self._active),
                                      execution_order(names, self.hook_points), stop_at_layer)
        for n in names:  # e.g. GPT-2 position embeddings come back with batch size 1
            if n in cache and self.hook_points[n].batch_broadcast and cache[n].shape[0] != ids.shape[0]:
                cache[n] = cache[n].expand(ids.shape[0], *cache[n].shape[1:])
        missing = [n for n in names if n not in cache]
        if missing:
            raise InterpError(f"Hooks {missing} did not fire before the forward pass stopped "
                              f"(stop_at_layer={stop_at_layer}); raise stop_at_layer.")
        return logits, cache

    def stop_layer_for(self, names: Sequence[str]) -> int | None:
        """The smallest `stop_at_layer` that still reaches every hook in `names` (None: all)."""
        deepest = max(_depth(self.hook_points[n]) for n in names)
        if deepest >= self.cfg.n_layers:  # the final norm: needs the whole stack
            return None
        return deepest + 1

    def _run(self, ids, mask, fwd_hooks, cache_names, stop_at_layer
             ) -> tuple[Tensor | None, dict[str, Tensor]]:
        raise NotImplementedError

    # ----------------------------------------------------------------- helpers for backends
    def _view(self, point: HookPoint, x: Tensor) -> Tensor:
        """The module's raw value as the hook sees it (unflattened batch, slice, heads)."""
        if point.flat:
            x = x.view(*self._batch_shape, *x.shape[1:])
        if point.part:
            a, b = point.part
            g = point.part_groups
            x = x.unflatten(-1, (g, -1))[..., a:b].flatten(-2) if g else x[..., a:b]
        return x.unflatten(-1, (point.heads, -1)) if point.heads else x

    def _unview(self, point: HookPoint, new: Tensor, raw: Tensor) -> Tensor:
        """A hook's replacement value back in the module's layout (`raw`: its original value)."""
        if point.heads:
            new = new.flatten(-2)
        if point.flat:
            new = new.flatten(0, 1)
        if point.part:
            a, b = point.part
            g = point.part_groups
            out = raw.clone()
            (out.unflatten(-1, (g, -1)) if g else out)[..., a:b] = (
                new.unflatten(-1, (g, -1)) if g else new)
            new = out
        return new


def _depth(point) -> int:
    """A hook point's block index, -1 for the embeddings (before block 0)."""
    return -1 if point.layer is None else point.layer
