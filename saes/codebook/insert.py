"""Codebook bottlenecks inserted at hooks of any `HookedModel`.

Codebook Features (arXiv 2310.17230, section 2.1) quantise the attention heads' outputs before
W_O (one codebook per head: `blocks.L.attn.hook_z`, the paper's `attn_preproj`) and the MLP
outputs (`blocks.L.hook_mlp_out`); the residual stream itself is left alone, though any hook
(e.g. `blocks.L.hook_resid_post`) can carry a codebook here. The bottleneck replaces the hook's
value inside the `with cb.enabled():` block (or `cb(...)`), so the same hook names work on every
backend that can replace values.

    cb = insert_codebooks(model, ["blocks.0.attn.hook_z", "blocks.1.hook_mlp_out"],
                          CodebookConfig(n_codes=1000, k=1))
    logits, ids = cb.run_with_codes(tokens)          # ids[hook]: [batch, pos, groups, k]
    with cb.patched({"blocks.1.hook_mlp_out": set_codes(7, positions=[-1])}):
        logits = cb(tokens)                           # behaves as if code 7 fired at the end
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor, nn

from interp.errors import ConfigError, InterpError
from interp.io import atomic_write_json, read_json, save_safetensors_atomic
from saes.codebook.bottleneck import CodebookConfig, CodebookLayer

CODEBOOKS_FILE = "codebooks.safetensors"
CODEBOOKS_CONFIG = "codebooks.json"


def hook_shape(model, hook: str) -> tuple[int, int]:
    """(groups, d) of a hook's value: heads x d_head for per-head hooks, else (1, width)."""
    point = model.hook_points[hook]
    c = model.cfg
    if point.heads:
        return point.heads, c.d_head
    if hook.endswith(("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear")):
        return 1, c.d_mlp
    return 1, c.d_model


def _key(hook: str) -> str:
    return hook.replace(".", "__")


class CodebookModel(nn.Module):
    """A HookedModel with codebook layers at some of its hooks (the model is not copied)."""

    def __init__(self, model, layers: dict[str, CodebookLayer]):
        super().__init__()
        if not layers:
            raise ConfigError("Give at least one hook for a codebook, e.g. "
                              "'blocks.0.attn.hook_z' or 'blocks.0.hook_mlp_out'.")
        model.validate_hooks(list(layers))
        for h in layers:
            model._check_writable(h)
        self.model = model
        self.hooks_ = list(layers)
        self.layers = nn.ModuleDict({_key(h): layer for h, layer in layers.items()})

    # ----------------------------------------------------------------- access
    @property
    def hook_names(self) -> list[str]:
        return list(self.hooks_)

    def layer(self, hook: str) -> CodebookLayer:
        if hook not in self.hooks_:
            from interp.errors import unknown_name_message
            raise InterpError(unknown_name_message("codebook hook", hook, self.hooks_,
                                                   hint=f"Codebooks sit at: {self.hooks_}."))
        return self.layers[_key(hook)]

    def items(self) -> Iterator[tuple[str, CodebookLayer]]:
        for h in self.hooks_:
            yield h, self.layers[_key(h)]

    def codebook_parameters(self) -> list[nn.Parameter]:
        return [layer.codebook for _, layer in self.items()]

    def reset_counts(self) -> None:
        for _, layer in self.items():
            layer.counts.zero_()

    # ----------------------------------------------------------------- running
    def _hook_fn(self, layer: CodebookLayer) -> Callable:
        def fn(x: Tensor, point) -> Tensor:
            v = x if point.heads else x.unsqueeze(-2)
            out = layer(v)
            return out if point.heads else out.squeeze(-2)
        return fn

    @contextlib.contextmanager
    def enabled(self, hooks: Sequence[str] | None = None) -> Iterator[CodebookModel]:
        """Snap the hooks' values through their codebooks inside the block (all by default)."""
        names = self.hooks_ if hooks is None else list(hooks)
        with self.model.hooks([(h, self._hook_fn(self.layer(h))) for h in names]):
            yield self

    @contextlib.contextmanager
    def patched(self, edits: dict[str, Callable[[Tensor], Tensor]]) -> Iterator[CodebookModel]:
        """Edit chosen code ids inside the block: `edits[hook](ids) -> ids`, ids of shape
        [batch, pos, groups, k] (see `set_codes`). Removed on exit, even on error."""
        added = []
        try:
            for h, fn in edits.items():
                layer = self.layer(h)
                layer.id_hooks.append(fn)
                added.append((layer, fn))
            yield self
        finally:
            for layer, fn in added:
                layer.id_hooks.remove(fn)

    def forward(self, inputs, **kw) -> Tensor:
        """Logits with every codebook in place."""
        with self.enabled():
            return self.model(inputs, **kw)

    def run_with_codes(self, inputs, **kw) -> tuple[Tensor, dict[str, Int[Tensor, "b p g k"]]]:
        """Logits and the code ids chosen at every codebook hook."""
        logits = self(inputs, **kw)
        return logits, {h: layer.last_ids for h, layer in self.items()}

    @torch.no_grad()
    def codes(self, inputs, **kw) -> dict[str, Int[Tensor, "b p g k"]]:
        return self.run_with_codes(inputs, **kw)[1]

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write `codebooks.safetensors` (one [groups, n_codes, d] tensor per hook, plus their
        firing counts) and `codebooks.json` (hooks, shapes, configs) into `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {}
        meta = {"hooks": {}, "model_name": self.model.name}
        for h, layer in self.items():
            tensors[f"{h}.codebook"] = layer.codebook.detach().cpu().float()
            tensors[f"{h}.counts"] = layer.counts.cpu()
            meta["hooks"][h] = {"groups": layer.groups, "d": layer.d, "config": layer.cfg.to_dict()}
        save_safetensors_atomic(tensors, path / CODEBOOKS_FILE)
        atomic_write_json(path / CODEBOOKS_CONFIG, meta)
        return path


def insert_codebooks(model, hooks: Sequence[str] | dict[str, CodebookConfig],
                     cfg: CodebookConfig | None = None) -> CodebookModel:
    """Codebook layers for `hooks` of `model` (one config for all, or one per hook)."""
    cfg = cfg or CodebookConfig()
    per_hook = hooks if isinstance(hooks, dict) else {h: cfg for h in hooks}
    model.validate_hooks(list(per_hook))
    layers = {}
    for i, (h, c) in enumerate(per_hook.items()):
        groups, d = hook_shape(model, h)
        c = CodebookConfig(**{**c.to_dict(), "seed": c.seed + i})  # distinct init per hook
        layers[h] = CodebookLayer(d, groups, c)
    return CodebookModel(model, layers).to(model.device)


def load_codebooks(model, path: str | Path) -> CodebookModel:
    """Codebooks written by `CodebookModel.save`, attached to `model`.

    The config and tensors are checked before any codebook is built (hooks an object of
    {d, groups, config}; each codebook tensor [groups, n_codes, d] as declared; the model's hook
    of that shape), so a damaged file gives a `BadFormat` / `CorruptFile` naming it."""
    from interp.errors import BadFormat, MissingFile
    from interp.io import load_safetensors

    path = Path(path)
    if not (path / CODEBOOKS_CONFIG).is_file():
        raise MissingFile(f"No codebooks in {path}: expected {CODEBOOKS_CONFIG} and "
                          f"{CODEBOOKS_FILE} (written by CodebookModel.save / `interp codebook "
                          "train`).")
    meta = read_json(path / CODEBOOKS_CONFIG, expect=dict)
    fix = "train the codebooks again (`interp codebook train`)."
    try:
        tensors = load_safetensors(path / CODEBOOKS_FILE, fix)
    except MissingFile as e:
        raise BadFormat(str(e)) from None
    hooks = meta.get("hooks")
    if not isinstance(hooks, dict) or not hooks:
        raise BadFormat(f"{path / CODEBOOKS_CONFIG}: 'hooks' must be a non-empty object; {fix}")
    layers = {}
    for h, info in hooks.items():
        try:
            d, groups, c = int(info["d"]), int(info["groups"]), dict(info["config"])
            cfg = CodebookConfig.from_dict(c)
        except (KeyError, TypeError, ValueError) as e:
            raise BadFormat(f"{path / CODEBOOKS_CONFIG}: hook {h!r} has no valid d, groups and "
                            f"config ({type(e).__name__}: {e}); {fix}") from e
        book = tensors.get(f"{h}.codebook")
        if book is None or tuple(book.shape) != (groups, cfg.n_codes, d):
            raise BadFormat(f"{path / CODEBOOKS_FILE}: tensor '{h}.codebook' is "
                            f"{'missing' if book is None else list(book.shape)}, but "
                            f"{CODEBOOKS_CONFIG} declares {[groups, cfg.n_codes, d]}; {fix}")
        counts = tensors.get(f"{h}.counts")
        if counts is not None and tuple(counts.shape) != (groups, cfg.n_codes):
            raise BadFormat(f"{path / CODEBOOKS_FILE}: tensor '{h}.counts' has shape "
                            f"{list(counts.shape)}, expected {[groups, cfg.n_codes]}; {fix}")
        model.validate_hooks([h])
        if hook_shape(model, h) != (groups, d):
            raise InterpError(f"Codebook at {h} has shape (groups, d) = "
                              f"{(groups, d)} but the model's hook has "
                              f"{hook_shape(model, h)}; load it on the model it was trained on "
                              f"({meta.get('model_name')!r}).")
        try:
            layer = CodebookLayer(d, groups, cfg)
        except (TypeError, ValueError, RuntimeError) as e:  # e.g. a seed that is not a number
            raise BadFormat(f"{path / CODEBOOKS_CONFIG}: hook {h!r} has a config the codebook "
                            f"cannot be built from ({type(e).__name__}: {e}); {fix}") from e
        with torch.no_grad():
            layer.codebook.copy_(book)
            if counts is not None:
                layer.counts.copy_(counts)
        layers[h] = layer
    return CodebookModel(model, layers).to(model.device)


def set_codes(codes: int | Sequence[int] | Tensor, positions: Sequence[int] | slice | None = None,
              group: int | None = None, slot: int | slice = -1) -> Callable[[Tensor], Tensor]:
    """An ids edit for `CodebookModel.patched`: write `codes` into `slot` (default the last,
    least similar of the k active codes, as the paper's `patch_in_codes`) at `positions` (default
    all) of `group` (a head; default all). `codes` may also be a tensor broadcastable to the
    selected ids [batch, pos, groups, slots], e.g. another input's ids at one position, shaped
    [batch, 1, groups, k] (the TokFSM intervention)."""
    pos = slice(None) if positions is None else positions
    grp = slice(None) if group is None else group

    def edit(ids: Tensor) -> Tensor:
        ids = ids.clone()
        val = torch.as_tensor(codes, dtype=ids.dtype, device=ids.device)
        if isinstance(pos, slice):
            ids[:, pos, grp, slot] = val
        else:
            for p in pos:
                p = p % ids.shape[1]
                ids[:, p: p + 1, grp, slot] = val
        return ids
    return edit
