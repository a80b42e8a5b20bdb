"""Qwen 3: Llama's layout with per-head QK-norm (RMSNorm on each head's queries and keys)."""

from __future__ import annotations

from functools import partial

import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), head_dim=d_model // n_heads,
        max_position_embeddings=n_ctx, **TINY_IDS)


FAMILY = Family(
    name="qwen3", summary="RMSNorm, RoPE, GQA, per-head QK-norm, SwiGLU; pre-norm",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=decoder.block_hooks, read=partial(decoder.read, family="qwen3"),
    tiny_config=tiny_config)
