"""OPT: LayerNorm, learned absolute positions (offset 2), biases, ReLU MLP written inline in
the block on [batch * pos] rows; pre-norm (`do_layer_norm_before`) models."""

from __future__ import annotations

import torch

from interp.errors import InterpError
from interp.models.facts import ModelFacts
from interp.models.families.adapter import TINY_IDS, Family, Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, act_factor, layer_norm,
                                       linear, tensor)


def embed_hooks(config) -> dict[str, Spec]:
    return {"hook_embed": at("model.decoder.embed_tokens"),
            "hook_pos_embed": at("model.decoder.embed_positions")}


def block_hooks(config) -> dict[str, Spec]:
    h = config.num_attention_heads
    return {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("self_attn_layer_norm"),
        "attn.hook_q": at("self_attn.q_proj", heads=h),
        "attn.hook_k": at("self_attn.k_proj", heads=h),
        "attn.hook_v": at("self_attn.v_proj", heads=h),
        "attn.hook_z": at("self_attn.out_proj", "in", heads=h),
        "attn.hook_pattern": at("self_attn", index=1, writable=False),
        "hook_attn_out": at("self_attn"),
        "hook_resid_mid": at("final_layer_norm", "in", writable=False, flat=True),
        "ln2.hook_normalized": at("final_layer_norm", flat=True),
        "mlp.hook_in": at("fc1", "in", flat=True),
        "mlp.hook_pre": at("fc1", flat=True),
        "mlp.hook_post": at("fc2", "in", flat=True),
        "hook_mlp_out": at("fc2", flat=True),
        "hook_resid_post": at(""),
    }


def check(config) -> None:
    if not config.do_layer_norm_before or config.word_embed_proj_dim != config.hidden_size:
        raise InterpError("This OPT model normalises after each block (opt-350m's "
                          "do_layer_norm_before=False, with projected embeddings); the frozen "
                          "network serves the pre-norm OPT models (125m, 1.3b and up).")


def read(hf, dtype: torch.dtype) -> Net:
    cfg, dec = hf.config, hf.model.decoder
    f = ModelFacts.from_config("", cfg)
    act = act_factor(cfg.activation_function)
    d = f.d_model
    blocks = []
    for layer in dec.layers:
        a = layer.self_attn
        q, qb = linear(a.q_proj, dtype)
        k, kb = linear(a.k_proj, dtype)
        v, vb = linear(a.v_proj, dtype)
        o, ob = linear(a.out_proj, dtype)
        up, upb = linear(layer.fc1, dtype)
        down, db = linear(layer.fc2, dtype)
        attn = Attention(q=q, k=k, v=v, o=o, q_bias=qb, k_bias=kb, v_bias=vb, o_bias=ob,
                         scale=a.scaling)
        blocks.append(Block(attn=attn, mlp=MLP(up=up, down=down, act=act, up_bias=upb,
                                               down_bias=db),
                            ln1=layer_norm(layer.self_attn_layer_norm, dtype, d=d),
                            ln2=layer_norm(layer.final_layer_norm, dtype, d=d)))
    head = hf.get_output_embeddings()
    pos = dec.embed_positions
    return Net(family="opt", blocks=blocks, final=layer_norm(dec.final_layer_norm, dtype, d=d),
               n_heads=f.n_heads, n_kv_heads=f.n_heads, d_head=f.d_head,
               embed_tokens=dec.embed_tokens, pos_embed=tensor(pos.weight[pos.offset:], dtype),
               unembed=tensor(head.weight, dtype),
               unembed_bias=tensor(getattr(head, "bias", None), dtype),
               token_embeddings=tensor(dec.embed_tokens.weight, dtype))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=vocab_size, hidden_size=d_model, ffn_dim=d_mlp, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, max_position_embeddings=n_ctx, word_embed_proj_dim=d_model,
        dropout=0.0, attention_dropout=0.0, **TINY_IDS)


FAMILY = Family(
    name="opt", summary="LayerNorm, learned positions, ReLU MLP, biases; pre-norm",
    blocks="model.decoder.layers", final_norm="model.decoder.final_layer_norm",
    embed_hooks=embed_hooks, block_hooks=block_hooks, read=read, tiny_config=tiny_config,
    check=check, limits="pre-norm models, not opt-350m", bridge_names={"mlp.hook_in": "mlp.in.hook_in"})
