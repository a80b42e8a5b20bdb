"""OLMo (1): Llama's layout with parameter-free LayerNorms (no weight, no bias, eps 1e-5)."""

from __future__ import annotations

import torch

from interp.errors import InterpError
import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family
from interp.models.transformer import layer_norm


def read(hf, dtype: torch.dtype):
    d = hf.config.hidden_size
    return decoder.read(hf, dtype, family="olmo",
                        norm=lambda mod: layer_norm(mod, dtype, d=d, eps=1e-5))


def check(config) -> None:
    if getattr(config, "clip_qkv", None) is not None:
        raise InterpError("This OLMo model clips Q, K and V (clip_qkv), a piecewise map that "
                          "is not a frozen linear factor; the frozen network (linearisation, "
                          "attribution graphs) serves OLMo models without clip_qkv.")


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import OlmoConfig

    return OlmoConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), max_position_embeddings=n_ctx, **TINY_IDS)


FAMILY = Family(
    name="olmo", summary="parameter-free LayerNorm, RoPE, GQA, SwiGLU; pre-norm",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=decoder.block_hooks, read=read, tiny_config=tiny_config, check=check,
    limits="not with clip_qkv")
