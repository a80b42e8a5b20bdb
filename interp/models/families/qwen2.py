"""Qwen 2 / 2.5: Llama's layout with Q/K/V biases and (optionally) sliding windows on upper
layers."""

from __future__ import annotations

from functools import partial

import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), max_position_embeddings=n_ctx,
        use_sliding_window=True, sliding_window=4, max_window_layers=1,
        tie_word_embeddings=True, **TINY_IDS)


FAMILY = Family(
    name="qwen2", summary="RMSNorm, RoPE, GQA, SwiGLU, QKV biases, sliding windows; pre-norm",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=decoder.block_hooks, read=partial(decoder.read, family="qwen2"),
    tiny_config=tiny_config)
