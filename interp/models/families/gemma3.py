"""Gemma 3 (text): Gemma 2's sandwich norms with per-head QK-norm instead of soft-capping, and
separate RoPE bases for local (sliding) and global layers."""

from __future__ import annotations

from functools import partial

import torch

from interp.errors import InterpError
import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family
from interp.models.transformer import rms_norm


def read(hf, dtype: torch.dtype):
    types = hf.config.layer_types
    return decoder.read(hf, dtype, family="gemma3_text", norms="sandwich",
                        norm=lambda mod: rms_norm(mod, dtype, plus_one=True),
                        rope_kind=lambda i: types[i])


def check(config) -> None:
    if getattr(config, "use_bidirectional_attention", False):
        raise InterpError("Bidirectional Gemma 3 models are not causal LMs; the frozen network "
                          "serves causal ones.")


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), head_dim=d_model // n_heads,
        max_position_embeddings=n_ctx, sliding_window=4,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention"
                     for i in range(n_layers)],
        query_pre_attn_scalar=d_model // n_heads, **TINY_IDS)


FAMILY = Family(
    name="gemma3_text", summary="RMSNorm (1 + w) sandwich norms, per-head QK-norm, local/global "
                                "RoPE, GQA, GeGLU",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=partial(decoder.block_hooks, norms="sandwich"), read=read,
    tiny_config=tiny_config, check=check, limits="causal models")
