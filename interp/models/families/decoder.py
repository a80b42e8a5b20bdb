"""The module layout most Hugging Face decoders share (Llama's), its hook table and its reader.

`model.embed_tokens`, `model.layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj (+ q_norm,
k_norm), post_attention_layernorm, mlp.{gate,up,down}_proj}`, `model.norm`, `model.rotary_emb`,
`lm_head`. Families differ in where their norms sit (`norms`):

- "pre": input_layernorm before attention, post_attention_layernorm before the MLP (Llama,
  Mistral, Qwen 2-3, OLMo, Gemma);
- "sandwich": a norm before and after each branch, pre_feedforward_layernorm before the MLP
  (Gemma 2-3): what a branch adds to the residual stream is its post-norm's output;
- "post": only post_attention_layernorm / post_feedforward_layernorm after each branch (OLMo 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp.models.facts import ModelFacts
from interp.models.families.adapter import Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, Norm, hf_rope, linear,
                                       rms_norm, tensor)

ATTN, MLP_ = "self_attn", "mlp"


def block_hooks(config, norms: str = "pre") -> dict[str, Spec]:
    f = ModelFacts.from_config("", config)
    pre = norms == "sandwich"
    post_attn = "post_attention_layernorm"
    ln2 = "pre_feedforward_layernorm" if pre else post_attn
    table = {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("input_layernorm"),
        "attn.hook_q": at(f"{ATTN}.q_proj", heads=f.n_heads),
        "attn.hook_k": at(f"{ATTN}.k_proj", heads=f.n_kv_heads),
        "attn.hook_v": at(f"{ATTN}.v_proj", heads=f.n_kv_heads),
        "attn.hook_z": at(f"{ATTN}.o_proj", "in", heads=f.n_heads),
        "attn.hook_pattern": at(ATTN, index=1, writable=False),
        "hook_attn_out": at(post_attn if norms != "pre" else ATTN),
        "hook_resid_mid": at(ln2, "in", writable=False),
        "ln2.hook_normalized": at(ln2),
        "mlp.hook_in": at(MLP_, "in"),
        "mlp.hook_pre": at(f"{MLP_}.gate_proj"),
        "mlp.hook_pre_linear": at(f"{MLP_}.up_proj"),
        "mlp.hook_post": at(f"{MLP_}.down_proj", "in"),
        "hook_mlp_out": at("post_feedforward_layernorm" if norms != "pre" else MLP_),
        "hook_resid_post": at(""),
    }
    if norms == "post":  # no pre-norms: the MLP reads the residual stream itself
        del table["ln1.hook_normalized"], table["ln2.hook_normalized"]
        table["hook_resid_mid"] = at(MLP_, "in", writable=False)
    return table


def embed_hooks(config) -> dict[str, Spec]:
    return {"hook_embed": at("model.embed_tokens")}


def sliding_window(i: int, attn, config) -> int | None:
    """The layer's window (Qwen 2-3, Gemma 2-3 set it per layer; Mistral and Phi-3 model-wide)."""
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(config, "sliding_window", None)


def read(hf, dtype: torch.dtype, family: str, norms: str = "pre",
         norm: Callable[[object], Norm] | None = None, qk_per_head: bool = True,
         rope_kind: Callable[[int], str] = lambda i: "default") -> Net:
    """Read a model of this layout into the frozen network's form."""
    cfg, base = hf.config, hf.model
    norm = norm or (lambda mod: rms_norm(mod, dtype))
    f = ModelFacts.from_config("", cfg)
    blocks = []
    for i, layer in enumerate(base.layers):
        a, m = layer.self_attn, layer.mlp
        q, qb = linear(a.q_proj, dtype)
        k, kb = linear(a.k_proj, dtype)
        v, vb = linear(a.v_proj, dtype)
        o, ob = linear(a.o_proj, dtype)
        up, upb = linear(m.up_proj, dtype)
        gate, gb = linear(m.gate_proj, dtype)
        down, db = linear(m.down_proj, dtype)
        attn = Attention(
            q=q, k=k, v=v, o=o, q_bias=qb, k_bias=kb, v_bias=vb, o_bias=ob,
            q_norm=norm(a.q_norm) if hasattr(a, "q_norm") else None,
            k_norm=norm(a.k_norm) if hasattr(a, "k_norm") else None,
            qk_norm_per_head=qk_per_head, scale=a.scaling,
            softcap=getattr(a, "attn_logit_softcapping", None),
            window=sliding_window(i, a, cfg), rope=rope_kind(i))
        mlp = MLP(up=up, down=down, gate=gate, act=m.act_fn, up_bias=upb, gate_bias=gb,
                  down_bias=db)
        if norms == "pre":
            ln1, ln2 = norm(layer.input_layernorm), norm(layer.post_attention_layernorm)
            post_attn = post_mlp = None
        elif norms == "sandwich":
            ln1, ln2 = norm(layer.input_layernorm), norm(layer.pre_feedforward_layernorm)
            post_attn = norm(layer.post_attention_layernorm)
            post_mlp = norm(layer.post_feedforward_layernorm)
        else:
            ln1 = ln2 = None
            post_attn = norm(layer.post_attention_layernorm)
            post_mlp = norm(layer.post_feedforward_layernorm)
        blocks.append(Block(attn=attn, mlp=mlp, ln1=ln1, ln2=ln2, post_attn=post_attn,
                            post_mlp=post_mlp))
    head = hf.get_output_embeddings()
    return Net(
        family=family, blocks=blocks, final=norm(base.norm), n_heads=f.n_heads,
        n_kv_heads=f.n_kv_heads, d_head=f.d_head, embed_tokens=base.embed_tokens,
        unembed=tensor(head.weight, dtype), unembed_bias=tensor(getattr(head, "bias", None), dtype),
        token_embeddings=tensor(base.embed_tokens.weight, dtype),
        rope_fn=hf_rope(base.rotary_emb),
        logit_softcap=getattr(cfg, "final_logit_softcapping", None))
