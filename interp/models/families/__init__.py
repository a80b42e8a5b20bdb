"""Model families: one adapter per family, registered by Hugging Face `model_type`.

An adapter (`adapter.Family`) gives the canonical hook table (torch and nnsight backends) and
reads the model into the uniform description of the frozen transformer
(`interp.models.transformer.Net`) that linearisation and attribution graphs run. Adding a family
means one module here and one line in `FAMILIES`. Models without an adapter still open on the
library backends (`transformer_lens`: the bridge's own names; `nnsight`: raw module paths).
"""

from __future__ import annotations

import torch

from interp.errors import UnsupportedModel, unknown_name_message
from interp.models.families import (gemma, gemma2, gemma3, gpt2, gpt_neox, gptj, llama, mistral,
                                    olmo, olmo2, opt, phi, phi3, qwen2, qwen3)
from interp.models.families.adapter import Family
from interp.models.transformer import Net

#: HF `model_type` -> adapter. Adding a family means one module and one line here.
FAMILIES: dict[str, Family] = {
    "llama": llama.FAMILY,
    "mistral": mistral.FAMILY,
    "qwen2": qwen2.FAMILY,
    "qwen3": qwen3.FAMILY,
    "olmo": olmo.FAMILY,
    "olmo2": olmo2.FAMILY,
    "gpt2": gpt2.FAMILY,
    "gpt_neox": gpt_neox.FAMILY,
    "gptj": gptj.FAMILY,
    "gemma": gemma.FAMILY,
    "gemma2": gemma2.FAMILY,
    "gemma3_text": gemma3.FAMILY,
    "phi": phi.FAMILY,
    "phi3": phi3.FAMILY,
    "opt": opt.FAMILY,
}

#: the capabilities of the families table (`interp models --families`), in its column order
CAPABILITIES = ("hooks: torch", "hooks: transformer_lens", "hooks: nnsight", "linearise",
                "attribution graphs")


def kind_of(config) -> str | None:
    """'mixture-of-experts' / 'encoder-only' / 'encoder-decoder' for models of those kinds."""
    if any(getattr(config, k, None) for k in ("num_local_experts", "num_experts",
                                               "n_routed_experts", "num_experts_per_tok")):
        return "mixture-of-experts"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES and \
            not getattr(config, "is_decoder", False):
        return "encoder-only"
    return None


def find_family(config) -> Family | None:
    """The adapter registered for this config's `model_type`, or None."""
    return FAMILIES.get(getattr(config, "model_type", None))


def family_for(config, capability: str = "the torch backend") -> Family:
    """The adapter of `config`'s family, or `UnsupportedModel` naming what is supported."""
    family = find_family(config)
    model_type = str(getattr(config, "model_type", None))
    kind = kind_of(config)
    if family is not None and kind is None:
        return family
    what = f"a {kind} model ({model_type})" if kind else f"model type {model_type!r}"
    msg = unknown_name_message(f"model family for {capability}", model_type, FAMILIES) \
        if kind is None else f"{capability} cannot serve {what}."
    raise UnsupportedModel(
        f"{msg} Supported families: {', '.join(sorted(FAMILIES))} (decoder-only, dense MLPs). "
        "Any causal LM that TransformerLens opens loads with backend='transformer_lens' (its "
        "hook names), and any model with backend='nnsight' (raw module paths as hook names). "
        "A new family is one module in interp/models/families/ and one registry line.")


def capability_table() -> list[dict]:
    """One row per family (and for models without an adapter): what each capability serves."""
    rows = []
    for model_type, fam in FAMILIES.items():
        frozen = "yes" + (f" ({fam.limits})" if fam.limits else "")
        bridge = "yes" + (f" ({fam.bridge_limits})" if fam.bridge_limits else "")
        rows.append({"family": model_type, "architecture": fam.summary,
                     **dict(zip(CAPABILITIES, ["yes", bridge, "yes", frozen, frozen]))})
    rows.append({"family": "any other causal LM", "architecture": "no adapter",
                 **dict(zip(CAPABILITIES, ["no", "bridge names (if TransformerLens opens it)",
                                           "module paths", "no", "no"]))})
    rows.append({"family": "mixture-of-experts, encoder-only", "architecture": "",
                 **dict(zip(CAPABILITIES, ["no", "if TransformerLens opens it",
                                           "module paths", "no", "no"]))})
    return rows


def table_markdown(rows: list[dict] | None = None) -> str:
    """The families table as Markdown (the CLI prints it; docs/models.md shows it)."""
    rows = rows or capability_table()
    cols = ["family", *CAPABILITIES, "architecture"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def hf_model_of(model):
    """The Hugging Face causal LM behind a `HookedModel` (or the model itself)."""
    return getattr(model, "hf_model", model)


def read_net(model, dtype: torch.dtype | str = torch.float64) -> Net:
    """Read a `HookedModel` (or an HF causal LM) into the frozen network's form, in `dtype`."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    hf = hf_model_of(model)
    family = family_for(hf.config, "the frozen network (linearisation, attribution graphs)")
    family.check(hf.config)
    with torch.no_grad():
        return family.read(hf, dtype)
