"""Phi (1, 1.5, 2): one LayerNorm feeding attention and MLP in parallel, partial RoPE, biases
everywhere (the unembedding too), GELU MLP, optional per-head QK LayerNorm."""

from __future__ import annotations

import torch

from interp.models.facts import ModelFacts
from interp.models.families.adapter import TINY_IDS, Family, Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, act_factor, hf_rope,
                                       layer_norm, linear, tensor)


def embed_hooks(config) -> dict[str, Spec]:
    return {"hook_embed": at("model.embed_tokens")}


def block_hooks(config) -> dict[str, Spec]:
    f = ModelFacts.from_config("", config)
    return {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("input_layernorm"),
        "attn.hook_q": at("self_attn.q_proj", heads=f.n_heads),
        "attn.hook_k": at("self_attn.k_proj", heads=f.n_kv_heads),
        "attn.hook_v": at("self_attn.v_proj", heads=f.n_kv_heads),
        "attn.hook_z": at("self_attn.dense", "in", heads=f.n_heads),
        "attn.hook_pattern": at("self_attn", index=1, writable=False),
        "hook_attn_out": at("self_attn"),
        "mlp.hook_in": at("mlp", "in"),
        "mlp.hook_pre": at("mlp.fc1"),
        "mlp.hook_post": at("mlp.fc2", "in"),
        "hook_mlp_out": at("mlp"),
        "hook_resid_post": at(""),
    }


def read(hf, dtype: torch.dtype) -> Net:
    cfg, base = hf.config, hf.model
    f = ModelFacts.from_config("", cfg)
    act = act_factor(cfg.hidden_act)
    blocks = []
    for layer in base.layers:
        a, m = layer.self_attn, layer.mlp
        ln = layer_norm(layer.input_layernorm, dtype)
        q, qb = linear(a.q_proj, dtype)
        k, kb = linear(a.k_proj, dtype)
        v, vb = linear(a.v_proj, dtype)
        o, ob = linear(a.dense, dtype)
        up, upb = linear(m.fc1, dtype)
        down, db = linear(m.fc2, dtype)
        qk = a.qk_layernorm
        attn = Attention(q=q, k=k, v=v, o=o, q_bias=qb, k_bias=kb, v_bias=vb, o_bias=ob,
                         q_norm=layer_norm(a.q_layernorm, dtype) if qk else None,
                         k_norm=layer_norm(a.k_layernorm, dtype) if qk else None,
                         scale=a.scaling, rope="default")
        blocks.append(Block(attn=attn, mlp=MLP(up=up, down=down, act=act, up_bias=upb,
                                               down_bias=db),
                            ln1=ln, ln2=ln, parallel=True))
    head = hf.get_output_embeddings()
    return Net(family="phi", blocks=blocks, final=layer_norm(base.final_layernorm, dtype),
               n_heads=f.n_heads, n_kv_heads=f.n_kv_heads, d_head=f.d_head,
               embed_tokens=base.embed_tokens, unembed=tensor(head.weight, dtype),
               unembed_bias=tensor(getattr(head, "bias", None), dtype),
               token_embeddings=tensor(base.embed_tokens.weight, dtype),
               rope_fn=hf_rope(base.rotary_emb))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import PhiConfig

    return PhiConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, max_position_embeddings=n_ctx,
        partial_rotary_factor=0.5, resid_pdrop=0.0, embd_pdrop=0.0,
        **TINY_IDS)


FAMILY = Family(
    name="phi", summary="LayerNorm shared by parallel attention + MLP, partial RoPE, GELU MLP, "
                        "biases, optional QK LayerNorm",
    blocks="model.layers", final_norm="model.final_layernorm", embed_hooks=embed_hooks,
    block_hooks=block_hooks, read=read, tiny_config=tiny_config,
    bridge_limits="not with qk_layernorm (the bridge does not run the QK norm)")
