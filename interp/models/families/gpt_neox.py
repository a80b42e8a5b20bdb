"""GPT-NeoX (Pythia): LayerNorm, partial RoPE, Q/K/V fused and interleaved per head, GELU MLP,
untied unembedding, attention and MLP in parallel (or in sequence: `use_parallel_residual`)."""

from __future__ import annotations

import torch

from interp.models.facts import ModelFacts
from interp.models.families.adapter import TINY_IDS, Family, Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, act_factor, hf_rope,
                                       layer_norm, linear, tensor)


def embed_hooks(config) -> dict[str, Spec]:
    return {"hook_embed": at("gpt_neox.embed_in")}


def block_hooks(config) -> dict[str, Spec]:
    f = ModelFacts.from_config("", config)
    h, dh = f.n_heads, f.d_head

    def qkv(j: int) -> Spec:  # per head: [q | k | v], each d_head wide
        return at("attention.query_key_value", part=(j * dh, (j + 1) * dh), part_groups=h,
                  heads=h)

    table = {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("input_layernorm"),
        "attn.hook_q": qkv(0), "attn.hook_k": qkv(1), "attn.hook_v": qkv(2),
        "attn.hook_z": at("attention.dense", "in", heads=h),
        "attn.hook_pattern": at("attention", index=1, writable=False),
        "hook_attn_out": at("attention"),
        "hook_resid_mid": at("post_attention_layernorm", "in", writable=False),
        "ln2.hook_normalized": at("post_attention_layernorm"),
        "mlp.hook_in": at("mlp", "in"),
        "mlp.hook_pre": at("mlp.dense_h_to_4h"),
        "mlp.hook_post": at("mlp.dense_4h_to_h", "in"),
        "hook_mlp_out": at("mlp"),
        "hook_resid_post": at(""),
    }
    if config.use_parallel_residual:  # the MLP's norm reads the block input: no resid_mid
        del table["hook_resid_mid"]
    return table


def read(hf, dtype: torch.dtype) -> Net:
    cfg, base = hf.config, hf.gpt_neox
    f = ModelFacts.from_config("", cfg)
    h, dh, d = f.n_heads, f.d_head, f.d_model
    act = act_factor(cfg.hidden_act)
    blocks = []
    for layer in base.layers:
        a, m = layer.attention, layer.mlp
        w, b = linear(a.query_key_value, dtype)
        w = w.view(h, 3, dh, d)
        b = b.view(h, 3, dh) if b is not None else None
        qkv = [w[:, j].reshape(h * dh, d) for j in range(3)]
        bqkv = [b[:, j].reshape(h * dh) if b is not None else None for j in range(3)]
        o, ob = linear(a.dense, dtype)
        up, upb = linear(m.dense_h_to_4h, dtype)
        down, db = linear(m.dense_4h_to_h, dtype)
        attn = Attention(q=qkv[0], k=qkv[1], v=qkv[2], o=o, q_bias=bqkv[0], k_bias=bqkv[1],
                         v_bias=bqkv[2], o_bias=ob, scale=a.scaling, rope="default")
        blocks.append(Block(attn=attn, mlp=MLP(up=up, down=down, act=act, up_bias=upb,
                                               down_bias=db),
                            ln1=layer_norm(layer.input_layernorm, dtype),
                            ln2=layer_norm(layer.post_attention_layernorm, dtype),
                            parallel=bool(cfg.use_parallel_residual)))
    head = hf.get_output_embeddings()
    return Net(family="gpt_neox", blocks=blocks, final=layer_norm(base.final_layer_norm, dtype),
               n_heads=h, n_kv_heads=h, d_head=dh, embed_tokens=base.embed_in,
               unembed=tensor(head.weight, dtype),
               unembed_bias=tensor(getattr(head, "bias", None), dtype),
               token_embeddings=tensor(base.embed_in.weight, dtype),
               rope_fn=hf_rope(base.rotary_emb))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, max_position_embeddings=n_ctx,
        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False, **TINY_IDS)


FAMILY = Family(
    name="gpt_neox", summary="LayerNorm, partial RoPE, fused per-head QKV, GELU MLP, biases, "
                             "untied unembedding; parallel attention + MLP",
    blocks="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm", embed_hooks=embed_hooks,
    block_hooks=block_hooks, read=read, tiny_config=tiny_config)
