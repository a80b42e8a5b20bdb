"""GPT-2: LayerNorm with biases, learned absolute positions, fused QKV (Conv1D, [in, out]
weights), GELU MLP, biases everywhere; pre-norm blocks."""

from __future__ import annotations

import torch

from interp.models.facts import ModelFacts
from interp.models.families.adapter import TINY_IDS, Family, Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, act_factor, layer_norm,
                                       tensor)


def embed_hooks(config) -> dict[str, Spec]:
    return {"hook_embed": at("transformer.wte"),
            "hook_pos_embed": at("transformer.wpe", batch_broadcast=True)}


def block_hooks(config) -> dict[str, Spec]:
    d, h = config.n_embd, config.n_head
    return {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("ln_1"),
        "attn.hook_q": at("attn.c_attn", part=(0, d), heads=h),
        "attn.hook_k": at("attn.c_attn", part=(d, 2 * d), heads=h),
        "attn.hook_v": at("attn.c_attn", part=(2 * d, 3 * d), heads=h),
        "attn.hook_z": at("attn.c_proj", "in", heads=h),
        "attn.hook_pattern": at("attn", index=1, writable=False),
        "hook_attn_out": at("attn"),
        "hook_resid_mid": at("ln_2", "in", writable=False),
        "ln2.hook_normalized": at("ln_2"),
        "mlp.hook_in": at("mlp", "in"),
        "mlp.hook_pre": at("mlp.c_fc"),
        "mlp.hook_post": at("mlp.c_proj", "in"),
        "hook_mlp_out": at("mlp"),
        "hook_resid_post": at(""),
    }


def read(hf, dtype: torch.dtype) -> Net:
    cfg, tr = hf.config, hf.transformer
    f = ModelFacts.from_config("", cfg)
    d = f.d_model
    act = act_factor(cfg.activation_function)

    def conv(mod):  # Conv1D: x @ w + b, w [in, out] -> [out, in]
        return tensor(mod.weight, dtype).T.contiguous(), tensor(mod.bias, dtype)

    blocks = []
    for layer in tr.h:
        a, m = layer.attn, layer.mlp
        w, b = conv(a.c_attn)
        o, ob = conv(a.c_proj)
        up, upb = conv(m.c_fc)
        down, db = conv(m.c_proj)
        attn = Attention(q=w[:d], k=w[d:2 * d], v=w[2 * d:], o=o, q_bias=b[:d],
                         k_bias=b[d:2 * d], v_bias=b[2 * d:], o_bias=ob, scale=a.scaling)
        blocks.append(Block(attn=attn, mlp=MLP(up=up, down=down, act=act, up_bias=upb,
                                               down_bias=db),
                            ln1=layer_norm(layer.ln_1, dtype), ln2=layer_norm(layer.ln_2, dtype)))
    head = hf.get_output_embeddings()
    return Net(family="gpt2", blocks=blocks, final=layer_norm(tr.ln_f, dtype), n_heads=f.n_heads,
               n_kv_heads=f.n_heads, d_head=f.d_head, embed_tokens=tr.wte,
               pos_embed=tensor(tr.wpe.weight, dtype), unembed=tensor(head.weight, dtype),
               unembed_bias=tensor(getattr(head, "bias", None), dtype),
               token_embeddings=tensor(tr.wte.weight, dtype))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_embd=d_model, n_inner=d_mlp, n_layer=n_layers, n_head=n_heads,
        n_positions=n_ctx, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **TINY_IDS)


FAMILY = Family(
    name="gpt2", summary="LayerNorm, learned positions, fused QKV, GELU MLP, biases; pre-norm",
    blocks="transformer.h", final_norm="transformer.ln_f", embed_hooks=embed_hooks,
    block_hooks=block_hooks, read=read, tiny_config=tiny_config)
