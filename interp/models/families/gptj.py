"""GPT-J: one LayerNorm feeding attention and MLP in parallel, RoPE on interleaved pairs of
the first `rotary_dim` dimensions, no attention biases, GELU MLP, untied biased unembedding."""

from __future__ import annotations

import torch

from interp.models.facts import ModelFacts
from interp.models.families.adapter import TINY_IDS, Family, Spec, at
from interp.models.transformer import (MLP, Attention, Block, Net, act_factor, layer_norm,
                                       linear, tensor)


def embed_hooks(config) -> dict[str, Spec]:
    return {"hook_embed": at("transformer.wte")}


def block_hooks(config) -> dict[str, Spec]:
    h = config.n_head
    return {
        "hook_resid_pre": at("", "in"),
        "ln1.hook_normalized": at("ln_1"),
        "attn.hook_q": at("attn.q_proj", heads=h),
        "attn.hook_k": at("attn.k_proj", heads=h),
        "attn.hook_v": at("attn.v_proj", heads=h),
        "attn.hook_z": at("attn.out_proj", "in", heads=h),
        "attn.hook_pattern": at("attn", index=1, writable=False),
        "hook_attn_out": at("attn"),
        "mlp.hook_in": at("mlp", "in"),
        "mlp.hook_pre": at("mlp.fc_in"),
        "mlp.hook_post": at("mlp.fc_out", "in"),
        "hook_mlp_out": at("mlp"),
        "hook_resid_post": at(""),
    }


def _rope(attn):
    """GPT-J's sinusoids: the buffer holds [sin | cos] of the rotated pairs; each value is
    repeated for the two dimensions of its pair."""
    table = attn.embed_positions

    def rope(n_pos: int, kind: str):
        sin, cos = table[:n_pos].float().chunk(2, dim=-1)
        return cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)

    return rope


def read(hf, dtype: torch.dtype) -> Net:
    cfg, tr = hf.config, hf.transformer
    f = ModelFacts.from_config("", cfg)
    act = act_factor(cfg.activation_function)
    blocks = []
    for layer in tr.h:
        a, m = layer.attn, layer.mlp
        ln = layer_norm(layer.ln_1, dtype)
        o, ob = linear(a.out_proj, dtype)
        up, upb = linear(m.fc_in, dtype)
        down, db = linear(m.fc_out, dtype)
        attn = Attention(q=tensor(a.q_proj.weight, dtype), k=tensor(a.k_proj.weight, dtype),
                         v=tensor(a.v_proj.weight, dtype), o=o, o_bias=ob,
                         scale=1.0 / float(a.scale_attn), rope="default")
        blocks.append(Block(attn=attn, mlp=MLP(up=up, down=down, act=act, up_bias=upb,
                                               down_bias=db),
                            ln1=ln, ln2=ln, parallel=True))
    head = hf.get_output_embeddings()
    return Net(family="gptj", blocks=blocks, final=layer_norm(tr.ln_f, dtype),
               n_heads=f.n_heads, n_kv_heads=f.n_heads, d_head=f.d_head, embed_tokens=tr.wte,
               unembed=tensor(head.weight, dtype),
               unembed_bias=tensor(getattr(head, "bias", None), dtype),
               token_embeddings=tensor(tr.wte.weight, dtype), rope_fn=_rope(tr.h[0].attn),
               rope_interleaved=True)


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import GPTJConfig

    return GPTJConfig(
        vocab_size=vocab_size, n_embd=d_model, n_inner=d_mlp, n_layer=n_layers, n_head=n_heads,
        n_positions=n_ctx, rotary_dim=d_model // n_heads // 2, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, tie_word_embeddings=False, **TINY_IDS)


FAMILY = Family(
    name="gptj", summary="LayerNorm shared by parallel attention + MLP, interleaved partial "
                         "RoPE, GELU MLP, biased untied unembedding",
    blocks="transformer.h", final_norm="transformer.ln_f", embed_hooks=embed_hooks,
    block_hooks=block_hooks, read=read, tiny_config=tiny_config)
