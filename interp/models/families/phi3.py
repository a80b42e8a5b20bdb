"""Phi-3: Llama-like (RMSNorm, RoPE, GQA, SwiGLU, pre-norm) with Q/K/V fused in `qkv_proj`
and gate/up fused in `gate_up_proj`, optional sliding window."""

from __future__ import annotations

import torch

from interp.models.facts import ModelFacts
import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family, Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, hf_rope, linear, rms_norm,
                                       tensor)


def block_hooks(config) -> dict[str, Spec]:
    f = ModelFacts.from_config("", config)
    nq, nk, F = f.n_heads * f.d_head, f.n_kv_heads * f.d_head, f.d_mlp
    return {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("input_layernorm"),
        "attn.hook_q": at("self_attn.qkv_proj", part=(0, nq), heads=f.n_heads),
        "attn.hook_k": at("self_attn.qkv_proj", part=(nq, nq + nk), heads=f.n_kv_heads),
        "attn.hook_v": at("self_attn.qkv_proj", part=(nq + nk, nq + 2 * nk), heads=f.n_kv_heads),
        "attn.hook_z": at("self_attn.o_proj", "in", heads=f.n_heads),
        "attn.hook_pattern": at("self_attn", index=1, writable=False),
        "hook_attn_out": at("self_attn"),
        "hook_resid_mid": at("post_attention_layernorm", "in", writable=False),
        "ln2.hook_normalized": at("post_attention_layernorm"),
        "mlp.hook_in": at("mlp", "in"),
        "mlp.hook_pre": at("mlp.gate_up_proj", part=(0, F)),
        "mlp.hook_pre_linear": at("mlp.gate_up_proj", part=(F, 2 * F)),
        "mlp.hook_post": at("mlp.down_proj", "in"),
        "hook_mlp_out": at("mlp"),
        "hook_resid_post": at(""),
    }


def read(hf, dtype: torch.dtype) -> Net:
    cfg, base = hf.config, hf.model
    f = ModelFacts.from_config("", cfg)
    nq, nk, F = f.n_heads * f.d_head, f.n_kv_heads * f.d_head, f.d_mlp
    blocks = []
    for i, layer in enumerate(base.layers):
        a, m = layer.self_attn, layer.mlp
        w, b = linear(a.qkv_proj, dtype)
        o, ob = linear(a.o_proj, dtype)
        gu, gub = linear(m.gate_up_proj, dtype)
        down, db = linear(m.down_proj, dtype)
        sl = (slice(0, nq), slice(nq, nq + nk), slice(nq + nk, nq + 2 * nk))
        bias = [b[s] if b is not None else None for s in sl]
        attn = Attention(q=w[sl[0]], k=w[sl[1]], v=w[sl[2]], o=o, q_bias=bias[0],
                         k_bias=bias[1], v_bias=bias[2], o_bias=ob, scale=a.scaling,
                         window=decoder.sliding_window(i, a, cfg), rope="default")
        mlp = MLP(up=gu[F:], gate=gu[:F], down=down, act=m.activation_fn,
                  up_bias=gub[F:] if gub is not None else None,
                  gate_bias=gub[:F] if gub is not None else None, down_bias=db)
        blocks.append(Block(attn=attn, mlp=mlp, ln1=rms_norm(layer.input_layernorm, dtype),
                            ln2=rms_norm(layer.post_attention_layernorm, dtype)))
    head = hf.get_output_embeddings()
    return Net(family="phi3", blocks=blocks, final=rms_norm(base.norm, dtype),
               n_heads=f.n_heads, n_kv_heads=f.n_kv_heads, d_head=f.d_head,
               embed_tokens=base.embed_tokens, unembed=tensor(head.weight, dtype),
               unembed_bias=tensor(getattr(head, "bias", None), dtype),
               token_embeddings=tensor(base.embed_tokens.weight, dtype),
               rope_fn=hf_rope(base.rotary_emb))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import Phi3Config

    return Phi3Config(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), max_position_embeddings=n_ctx,
        original_max_position_embeddings=n_ctx, partial_rotary_factor=0.5, sliding_window=None,
        resid_pdrop=0.0, embd_pdrop=0.0, **TINY_IDS)


FAMILY = Family(
    name="phi3", summary="RMSNorm, (partial) RoPE, GQA, fused QKV and gate/up, SwiGLU; pre-norm",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=block_hooks, read=read, tiny_config=tiny_config)
