"""The width of each canonical hook's vectors, read off a model's facts (no forward pass).

Head dimensions are flattened, as the activation store keeps them: `attn.hook_z` of a model with
8 heads of 64 has width 512. `attn.hook_pattern` has no fixed width (it grows with the context).
"""

from __future__ import annotations

from interp.errors import HookNotFound

_D_MODEL = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
            "ln1.hook_normalized", "ln2.hook_normalized", "hook_attn_out", "hook_mlp_out",
            "mlp.hook_in", "ln_final.hook_normalized")
_D_MLP = ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post")


def hook_width(facts, name: str) -> int:
    """Width of the vectors at canonical hook `name` of a model with `facts` (a ModelFacts)."""
    sub = name.split(".", 2)[2] if name.startswith("blocks.") else name
    if sub in _D_MODEL:
        return facts.d_model
    if sub in _D_MLP:
        return facts.d_mlp
    if sub in ("attn.hook_q", "attn.hook_z"):
        return facts.n_heads * facts.d_head
    if sub in ("attn.hook_k", "attn.hook_v"):
        return facts.n_kv_heads * facts.d_head
    raise HookNotFound(f"Hook {name!r} has no fixed width (attention patterns grow with the "
                       "context) or is not a canonical hook name; cache a residual, attention "
                       "or MLP hook instead.")
