"""Gemma (1): Llama's layout with RMSNorm weight 1 + w, GeGLU, embeddings scaled by √d_model."""

from __future__ import annotations

import torch

import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family
from interp.models.transformer import rms_norm


def read(hf, dtype: torch.dtype):
    return decoder.read(hf, dtype, family="gemma",
                        norm=lambda mod: rms_norm(mod, dtype, plus_one=True))


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import GemmaConfig

    return GemmaConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), head_dim=d_model // n_heads,
        max_position_embeddings=n_ctx, **TINY_IDS)


FAMILY = Family(
    name="gemma", summary="RMSNorm (1 + w), RoPE, GQA/MQA, GeGLU, √d-scaled embeddings; pre-norm",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=decoder.block_hooks, read=read, tiny_config=tiny_config)
