"""OLMo 2: RMSNorm after each branch only (no pre-norms), QK-norm over the whole projection."""

from __future__ import annotations

from functools import partial

import interp.models.families.decoder as decoder
from interp.models.families.adapter import TINY_IDS, Family


def tiny_config(n_layers, d_model, n_heads, d_mlp, vocab_size, n_ctx):
    from transformers import Olmo2Config

    return Olmo2Config(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2), max_position_embeddings=n_ctx, **TINY_IDS)


FAMILY = Family(
    name="olmo2", summary="RMSNorm post-norms only, QK-norm (whole projection), RoPE, SwiGLU",
    blocks="model.layers", final_norm="model.norm", embed_hooks=decoder.embed_hooks,
    block_hooks=partial(decoder.block_hooks, norms="post"),
    read=partial(decoder.read, family="olmo2", norms="post", qk_per_head=False),
    tiny_config=tiny_config)
