"""Shape facts of a model, read from its Hugging Face config (any decoder, adapter or not)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


def _first(config, *keys, default=None):
    for k in keys:
        v = getattr(config, k, None)
        if v:
            return v
    return default


@dataclass(frozen=True)
class ModelFacts:
    """Shape facts of a model, read from its config (0 where the config does not say)."""

    name: str
    model_type: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_vocab: int
    n_ctx: int

    @classmethod
    def from_config(cls, name: str, config) -> ModelFacts:
        d_model = _first(config, "hidden_size", "n_embd", "d_model", default=0)
        n_heads = _first(config, "num_attention_heads", "n_head", "num_heads", default=0)
        return cls(
            name=name, model_type=str(getattr(config, "model_type", "")),
            n_layers=_first(config, "num_hidden_layers", "n_layer", "num_layers", default=0),
            d_model=d_model,
            d_mlp=_first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * d_model),
            n_heads=n_heads,
            n_kv_heads=_first(config, "num_key_value_heads", default=n_heads),
            d_head=_first(config, "head_dim", default=d_model // n_heads if n_heads else 0),
            d_vocab=_first(config, "vocab_size", default=0),
            n_ctx=_first(config, "max_position_embeddings", "n_positions", "seq_length",
                         default=0),
        )

    def to_dict(self) -> dict:
        return asdict(self)
