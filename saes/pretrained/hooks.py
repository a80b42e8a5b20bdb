"""Hook names of other libraries in our canonical names, and whether a dictionary fits a model.

SAELens names hooks as TransformerLens does, which are our names too, apart from a few older
spellings (`blocks.L.hook_z`) and `hook_mlp_in` (TransformerLens's copy of the MLP block's
input, which is the pre-norm `hook_resid_mid`). circuit-tracer names per-layer hooks without
the `blocks.L.` prefix, and `mlp.hook_out` (the MLP's output) is our `hook_mlp_out` on every
family whose MLP output enters the residual stream unnormalised.

`check_fits` compares a dictionary with a model (a loaded `HookedModel`, a transformers config
or a model name): its input (and, for transcoders, output) hook must exist and have the
dictionary's width. A model family without an adapter in `interp.models.families` is checked
by layer range and hook kind.
"""

from __future__ import annotations

import re
from pathlib import Path

from interp.errors import ModelLoadError, ModelMismatch, unknown_name_message

#: old or foreign per-block hook suffixes -> ours
_RENAMES = {
    "hook_z": "attn.hook_z", "hook_q": "attn.hook_q", "hook_k": "attn.hook_k",
    "hook_v": "attn.hook_v", "hook_mlp_in": "hook_resid_mid", "mlp.hook_out": "hook_mlp_out",
}
#: families whose MLP output is normalised before the residual add (mlp.hook_out != hook_mlp_out)
_POST_MLP_NORM = ("gemma2", "gemma3", "gemma3_text", "olmo2")
#: per-block hooks every family has a place for (checked when a family has no adapter)
_BLOCK_HOOKS = (
    "hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
    "attn.hook_z", "attn.hook_pattern", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized",
    "mlp.hook_in", "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out",
    "hook_resid_post",
)
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def canonical_hook(name: str) -> str:
    """Our name for a SAELens / TransformerLens / circuit-tracer hook name."""
    m = _BLOCK.match(name or "")
    if m is None:
        return name or ""
    return f"blocks.{m.group(1)}.{_RENAMES.get(m.group(2), m.group(2))}"


def block_hook(layer: int, suffix: str) -> str:
    """circuit-tracer's per-layer hook (`mlp.hook_in`) at `layer`, in our names."""
    return canonical_hook(f"blocks.{layer}.{suffix}")


def hook_layer(name: str) -> int | None:
    m = _BLOCK.match(name or "")
    return int(m.group(1)) if m else None


# ============================================================== the model side
def model_facts(model):
    """(ModelFacts, {hook: HookPoint} or None, model_type) of a HookedModel, a transformers
    config, or a model name / directory (its config is read, the weights are not)."""
    from interp.models.base import ModelFacts

    if hasattr(model, "hook_points") and hasattr(model, "cfg"):
        return model.cfg, model.hook_points, model.cfg.model_type
    config = model
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        from transformers import AutoConfig

        from interp.models.loading import resolve_model

        from saes.pretrained.registry import model_id

        name = str(model)
        display, where = resolve_model(name if Path(name).exists() else model_id(name))
        try:
            config = AutoConfig.from_pretrained(where)
        except OSError as e:
            raise ModelLoadError(f"Could not read the config of model {where!r}: {e}") from None
        name = display
    else:
        name = getattr(config, "_name_or_path", "") or getattr(config, "model_type", "model")
    facts = ModelFacts.from_config(str(name), config)
    from interp.models.families import find_family

    family = find_family(config)
    # no adapter for this family: checked by layer range and hook kind
    points = family.hooks(config) if family is not None else None
    return facts, points, facts.model_type


def hook_width(hook: str, facts) -> int | None:
    """The width of the vectors at `hook` (None where it is not one vector per position)."""
    m = _BLOCK.match(hook)
    sub = m.group(2) if m else hook
    if sub in ("attn.hook_z", "attn.hook_q"):
        return facts.n_heads * facts.d_head
    if sub in ("attn.hook_k", "attn.hook_v"):
        return facts.n_kv_heads * facts.d_head
    if sub in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
        return facts.d_mlp
    if sub == "attn.hook_pattern":
        return None
    return facts.d_model


def _check_hook(hook: str, facts, points, what: str) -> None:
    if points is not None:
        if hook not in points:
            raise ModelMismatch(f"{what} uses hook {hook!r}, which model {facts.name!r} does not "
                                "have. " + unknown_name_message("hook", hook, points))
        return
    m = _BLOCK.match(hook)
    if m is None:
        if hook not in ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized"):
            raise ModelMismatch(f"{what} uses hook {hook!r}, which is not a canonical hook name.")
        return
    layer, sub = int(m.group(1)), m.group(2)
    if layer >= facts.n_layers:
        raise ModelMismatch(f"{what} uses hook {hook!r}, but model {facts.name!r} has layers "
                            f"0..{facts.n_layers - 1}.")
    if sub not in _BLOCK_HOOKS:
        raise ModelMismatch(f"{what} uses hook {hook!r}; " + unknown_name_message(
            "per-block hook", sub, _BLOCK_HOOKS))


def check_fits(dictionary, model, what: str = "The dictionary", facts=None) -> None:
    """Raise `ModelMismatch` unless `dictionary` reads (and writes) hooks that `model` has,
    with the model's widths there (d_model for the residual stream). `facts` is
    `model_facts(model)` when the caller has it already."""
    facts, points, _ = facts or model_facts(model)
    cfg = dictionary.cfg
    sides = [(cfg.hook_name, cfg.d_in, "reads")]
    if cfg.transcoder:
        sides.append((cfg.hook_name_out or cfg.hook_name, cfg.out_dim, "writes"))
    for hook, width, verb in sides:
        if not hook:
            raise ModelMismatch(f"{what} does not name the hook it {verb}; it cannot be checked "
                                f"against {facts.name!r}.")
        _check_hook(hook, facts, points, what)
        want = hook_width(hook, facts)
        if want is not None and width != want:
            belongs = f" It was made for {cfg.model_name!r}." if cfg.model_name else ""
            raise ModelMismatch(
                f"{what} {verb} {hook!r} with width {width}, but model {facts.name!r} has width "
                f"{want} there (d_model {facts.d_model}).{belongs} Load the model it belongs to.")


def check_output_hook(suffix: str, model_type: str, what: str) -> None:
    """circuit-tracer's `mlp.hook_out` is our `hook_mlp_out` only without a post-MLP norm."""
    if suffix == "mlp.hook_out" and model_type in _POST_MLP_NORM:
        raise ModelMismatch(
            f"{what} writes circuit-tracer's 'mlp.hook_out' (the MLP before its output norm), "
            f"but a {model_type} model normalises the MLP output before hook_mlp_out; a "
            "transcoder for it must write 'hook_mlp_out'.")
