"""The weights an attribution graph needs, read out of a Hugging Face model per family.

With attention patterns and norm scales frozen, a transformer's residual stream is linear in
what is written to it (Ameisen et al. 2025, "Circuit Tracing", transformer-circuits.pub; Dunefsky
et al. 2024, "Transcoders Find Interpretable LLM Feature Circuits", arXiv 2406.11944). What is
left of each block is its norms, the attention value/output maps (OV) and the biases; the
queries and keys only shape the (frozen) patterns. `read_weights` returns those pieces in one
layout for every registered family:

    v[kv]  = h @ W_V[kv] + b_V[kv]          h: [pos, d_model], W_V: [n_kv, d_model, d_head]
    z[h]   = A[h] @ v[kv_of_head[h]]         A: [heads, pos, pos]  (frozen)
    out    = sum_h z[h] @ W_O[h] + b_O       W_O: [heads, d_head, d_model]

A family is one function and one line in `ADAPTERS` (keyed by the HF `model_type`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError, unknown_name_message


@dataclass(frozen=True)
class Norm:
    """A norm with its scale frozen: y = w * (P x) * s + b; P centres for LayerNorm."""

    kind: str  # "rms" | "layer"
    weight: Float[Tensor, "d_model"]
    bias: Float[Tensor, "d_model"] | None
    eps: float

    def scale(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """The per-position scale s the norm applies to `x` (what gets frozen)."""
        x = x.double()
        if self.kind == "layer":
            return torch.rsqrt(x.var(-1, unbiased=False) + self.eps).float()
        return torch.rsqrt(x.pow(2).mean(-1) + self.eps).float()

    def center(self, x: Tensor) -> Tensor:
        return x - x.mean(-1, keepdim=True) if self.kind == "layer" else x

    def apply(self, x: Tensor, s: Tensor, with_bias: bool = True) -> Tensor:
        """Frozen forward: x [..., pos, d], s [..., pos]."""
        y = self.center(x) * s.unsqueeze(-1) * self.weight
        return y + self.bias if (with_bias and self.bias is not None) else y

    def transpose(self, g: Tensor, s: Tensor) -> Tensor:
        """The adjoint of the frozen map (the centring projection is symmetric)."""
        return self.center(g * self.weight * s.unsqueeze(-1))


@dataclass(frozen=True)
class LayerWeights:
    ln1: Norm
    ln2: Norm
    W_V: Float[Tensor, "n_kv d_model d_head"]
    b_V: Float[Tensor, "n_kv d_head"] | None
    W_O: Float[Tensor, "heads d_head d_model"]
    b_O: Float[Tensor, "d_model"] | None
    kv_of_head: tuple[int, ...]


@dataclass(frozen=True)
class ModelWeights:
    layers: list[LayerWeights]
    ln_final: Norm
    W_E: Float[Tensor, "vocab d_model"]
    W_U: Float[Tensor, "d_model vocab"]
    b_U: Float[Tensor, "vocab"] | None
    W_pos: Float[Tensor, "n_ctx d_model"] | None  # learned absolute positions (a fixed term)

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def _f(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().float()


def _norm(module, kind: str) -> Norm:
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None) or 1e-5
    return Norm(kind, _f(module.weight), _f(getattr(module, "bias", None)), float(eps))


def _llama(hf) -> ModelWeights:
    cfg = hf.config
    H = cfg.num_attention_heads
    KV = getattr(cfg, "num_key_value_heads", None) or H
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    layers = []
    for blk in hf.model.layers:
        at = blk.self_attn
        W_V = _f(at.v_proj.weight).reshape(KV, dh, -1).transpose(1, 2).contiguous()
        b_V = None if at.v_proj.bias is None else _f(at.v_proj.bias).reshape(KV, dh)
        W_O = _f(at.o_proj.weight).reshape(-1, H, dh).permute(1, 2, 0).contiguous()
        layers.append(LayerWeights(_norm(blk.input_layernorm, "rms"),
                                   _norm(blk.post_attention_layernorm, "rms"), W_V, b_V, W_O,
                                   _f(at.o_proj.bias), tuple(h // (H // KV) for h in range(H))))
    head = hf.get_output_embeddings()
    return ModelWeights(layers, _norm(hf.model.norm, "rms"), _f(hf.model.embed_tokens.weight),
                        _f(head.weight).T.contiguous(), _f(getattr(head, "bias", None)), None)


def _gpt2(hf) -> ModelWeights:
    cfg = hf.config
    H, d = cfg.n_head, cfg.n_embd
    dh = d // H
    layers = []
    for blk in hf.transformer.h:
        w, b = _f(blk.attn.c_attn.weight), _f(blk.attn.c_attn.bias)  # Conv1D: x @ w + b
        W_V = w[:, 2 * d:].reshape(d, H, dh).permute(1, 0, 2).contiguous()
        b_V = b[2 * d:].reshape(H, dh)
        W_O = _f(blk.attn.c_proj.weight).reshape(H, dh, d).contiguous()
        layers.append(LayerWeights(_norm(blk.ln_1, "layer"), _norm(blk.ln_2, "layer"), W_V, b_V,
                                   W_O, _f(blk.attn.c_proj.bias), tuple(range(H))))
    head = hf.get_output_embeddings()
    return ModelWeights(layers, _norm(hf.transformer.ln_f, "layer"), _f(hf.transformer.wte.weight),
                        _f(head.weight).T.contiguous(), _f(getattr(head, "bias", None)),
                        _f(hf.transformer.wpe.weight))


#: HF `model_type` -> reader. Qwen3's q/k norms only shape the (frozen) patterns.
ADAPTERS: dict[str, Callable[[object], ModelWeights]] = {
    "llama": _llama, "mistral": _llama, "qwen2": _llama, "qwen3": _llama, "gpt2": _gpt2,
}


def read_weights(model) -> ModelWeights:
    """The frozen-system weights of a `HookedModel` (any backend: its `hf_model` is read)."""
    hf = model.hf_model
    kind = getattr(hf.config, "model_type", None)
    if kind not in ADAPTERS:
        raise InterpError(unknown_name_message(
            "model family for attribution graphs", str(kind), ADAPTERS,
            hint="Add a reader to circuits/weights.py (one function and one ADAPTERS line)."))
    if getattr(hf.config, "final_logit_softcapping", None):
        raise InterpError("Logit soft-capping is not linear; attribution graphs need a model "
                          "without it.")
    return ADAPTERS[kind](hf)
