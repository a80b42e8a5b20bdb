"""Gemma 2: sandwich norms (RMSNorm 1 + w before and after each branch), attention-logit and
final-logit soft-capping, local (sliding) and global layers alternating, GeGLU."""

from __future__ import annotations

from functools import partial

import torch

import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family
from interp.models.transformer import rms_norm


def read(hf, dtype: torch.dtype):
    return decoder.read(hf, dtype, family="gemma2", norms="sandwich",
                        norm=lambda mod: rms_norm(mod, dtype, plus_one=True))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), head_dim=d_model // n_heads,
        max_position_embeddings=n_ctx, sliding_window=4, query_pre_attn_scalar=d_model // n_heads,
        attn_logit_softcapping=5.0, final_logit_softcapping=3.0, **TINY_IDS)


FAMILY = Family(
    name="gemma2", summary="RMSNorm (1 + w) sandwich norms, RoPE, GQA, GeGLU, logit soft-caps, "
                           "local/global layers",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=partial(decoder.block_hooks, norms="sandwich"), read=read,
    tiny_config=tiny_config)
