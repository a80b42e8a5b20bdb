"""Model families for the detached Jacobian: each reads a Hugging Face model into one uniform form.

Golden, "Large Language Models are Locally Linear Mappings" (arXiv 2505.24293) linearises a
pre-norm decoder by freezing its nonlinear factors. Every supported block is, in the form built
here,

    h += post_attn_norm( W_O · P · W_V · norm1(h) )        P: softmax pattern (frozen)
    h += post_mlp_norm( W_down · (g ⊙ W_up · norm2(h)) )   g: activated gate (frozen)

and the output is `final_norm(h)`. Llama/Mistral/Qwen (SwiGLU, RMSNorm), GPT-2 (GELU MLP, LayerNorm,
biases everywhere; `g` is the GELU's multiplicative factor) and Gemma 3 (GELU-tanh gate,
RMSNorm with weight 1 + w, sandwich norms, QK-norm, sliding windows) are one function each in
`FAMILIES`, keyed by the HF `model_type`. Weights are copied in the analysis dtype, so a float32
model is analysed in float64 without touching the model itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from interp.errors import InterpError, unknown_name_message


@dataclass
class Norm:
    """RMSNorm (`x · s · w`) or LayerNorm (`(x − mean x) · s · w + b`); `s` is the frozen scale."""

    kind: str  # "rms" | "layer"
    weight: Tensor
    eps: float
    bias: Tensor | None = None


@dataclass
class Block:
    """One decoder block in the uniform form (weights as [out, in] matrices, nn.Linear layout)."""

    ln1: Norm
    q: Tensor
    k: Tensor
    v: Tensor
    o: Tensor
    ln2: Norm
    up: Tensor
    down: Tensor
    gate: Tensor | None = None  # gated MLP (SwiGLU / GeGLU); None: g = act(up) / up
    q_bias: Tensor | None = None
    k_bias: Tensor | None = None
    v_bias: Tensor | None = None
    o_bias: Tensor | None = None
    up_bias: Tensor | None = None
    gate_bias: Tensor | None = None
    down_bias: Tensor | None = None
    q_norm: Norm | None = None  # per-head norms on Q and K (Gemma 3, Qwen 3)
    k_norm: Norm | None = None
    post_attn: Norm | None = None  # sandwich norms (Gemma 2/3)
    post_mlp: Norm | None = None
    scale: float = 1.0  # attention logit scale
    softcap: float | None = None
    window: int | None = None  # sliding window: key k is seen by query q when q - k < window
    rope_kind: str | None = None  # key for `Net.rope`; None: no rotary embedding


@dataclass
class Net:
    """A decoder read into the uniform form, with what it needs around the blocks."""

    family: str
    blocks: list[Block]
    final: Norm
    n_heads: int
    n_kv_heads: int
    d_head: int
    act: Callable[[Tensor], Tensor]  # gated: the activated gate; else the factor act(h) / h
    embed: Callable[[Tensor], Tensor]  # ids [pos] -> input embeddings x [pos, d_model]
    unembed: Tensor  # [vocab, d_model]: logits = unembed @ final-norm output
    token_embeddings: Tensor  # [vocab, d_model]: rows that right singular vectors decode to
    rope_fn: Callable[[int, str], tuple[Tensor, Tensor]] | None = None
    has_bias: bool = False
    bias_note: str = ""
    _rope_cache: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return self.final.weight.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.final.weight.dtype

    def rope(self, n_pos: int, kind: str) -> tuple[Tensor, Tensor]:
        key = (n_pos, kind)
        if key not in self._rope_cache:
            cos, sin = self.rope_fn(n_pos, kind)
            self._rope_cache[key] = (cos.to(self.dtype), sin.to(self.dtype))
        return self._rope_cache[key]


def _t(p, dtype) -> Tensor | None:
    return None if p is None else p.detach().to(dtype).clone()


def _has_nonzero(*ts) -> bool:
    return any(t is not None and bool(t.abs().max() > 0) for t in ts)


def _hf_rope(rotary) -> Callable[[int, str], tuple[Tensor, Tensor]]:
    """cos/sin of positions 0..n-1 from the model's own rotary module (any RoPE scaling type)."""

    def rope(n_pos: int, kind: str):
        probe = torch.zeros(1, dtype=torch.float32)
        pos = torch.arange(n_pos).unsqueeze(0)
        with torch.no_grad():
            cos, sin = rotary(probe, pos) if kind == "default" else rotary(probe, pos, kind)
        return cos[0], sin[0]

    return rope


# ---------------------------------------------------------------------------------- activations
def _gelu_tanh_factor(h: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h.pow(3))))


#: act(h) = h · factor(h): the factor is what the paper freezes in an ungated MLP.
ACT_FACTORS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_new": _gelu_tanh_factor, "gelu_pytorch_tanh": _gelu_tanh_factor,
    "gelu_fast": _gelu_tanh_factor,
    "gelu": lambda h: 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0))),
    "relu": lambda h: (h > 0).to(h.dtype),
    "silu": torch.sigmoid, "swish": torch.sigmoid,
}


# ---------------------------------------------------------------------------------- families
def _llama(hf, dtype) -> Net:
    """Llama / Mistral / Qwen 2-3 / OLMo: RMSNorm, SwiGLU, RoPE, GQA (SmolLM2 is one)."""
    cfg = hf.config
    base = hf.model
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    eps = cfg.rms_norm_eps
    window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
    if cfg.model_type in ("qwen2", "qwen3") and getattr(cfg, "use_sliding_window", False):
        window = cfg.sliding_window

    def rms(mod) -> Norm:
        return Norm("rms", _t(mod.weight, dtype), getattr(mod, "variance_epsilon", eps))

    blocks, biases = [], []
    for layer in base.layers:
        a, m = layer.self_attn, layer.mlp
        b = Block(
            ln1=rms(layer.input_layernorm), ln2=rms(layer.post_attention_layernorm),
            q=_t(a.q_proj.weight, dtype), k=_t(a.k_proj.weight, dtype),
            v=_t(a.v_proj.weight, dtype), o=_t(a.o_proj.weight, dtype),
            q_bias=_t(a.q_proj.bias, dtype), k_bias=_t(a.k_proj.bias, dtype),
            v_bias=_t(a.v_proj.bias, dtype), o_bias=_t(a.o_proj.bias, dtype),
            up=_t(m.up_proj.weight, dtype), gate=_t(m.gate_proj.weight, dtype),
            down=_t(m.down_proj.weight, dtype), up_bias=_t(m.up_proj.bias, dtype),
            gate_bias=_t(m.gate_proj.bias, dtype), down_bias=_t(m.down_proj.bias, dtype),
            q_norm=rms(a.q_norm) if hasattr(a, "q_norm") else None,
            k_norm=rms(a.k_norm) if hasattr(a, "k_norm") else None,
            scale=a.scaling, window=window, rope_kind="default",
        )
        blocks.append(b)
        biases += [b.v_bias, b.o_bias, b.up_bias, b.down_bias]
    act = layer.mlp.act_fn
    has_bias = _has_nonzero(*biases)
    return Net(
        family="llama", blocks=blocks, final=rms(base.norm), n_heads=n_heads, n_kv_heads=n_kv,
        d_head=d_head, act=act, embed=lambda ids: base.embed_tokens(ids).to(dtype),
        unembed=_t(hf.get_output_embeddings().weight, dtype),
        token_embeddings=_t(base.embed_tokens.weight, dtype), rope_fn=_hf_rope(base.rotary_emb),
        has_bias=has_bias,
        bias_note=("V/O/MLP biases enter as one constant term c = F(0) of the frozen affine map"
                   if has_bias else "no biases on the linear path: exactly homogeneous"),
    )


def _gpt2(hf, dtype) -> Net:
    """GPT-2: LayerNorm with biases, fused QKV (Conv1D, [in, out] weights), GELU MLP."""
    cfg = hf.config
    tr = hf.transformer
    d = cfg.n_embd
    n_heads = cfg.n_head
    act_name = cfg.activation_function
    if act_name not in ACT_FACTORS:
        raise InterpError(unknown_name_message("activation", act_name, ACT_FACTORS,
                                               hint="Add its factor act(h)/h to ACT_FACTORS."))

    def ln(mod) -> Norm:
        return Norm("layer", _t(mod.weight, dtype), mod.eps, _t(mod.bias, dtype))

    blocks = []
    for i, layer in enumerate(tr.h):
        at, m = layer.attn, layer.mlp
        w = _t(at.c_attn.weight, dtype).T  # Conv1D: [in, out] -> [out, in]
        bqkv = _t(at.c_attn.bias, dtype)
        blocks.append(Block(
            ln1=ln(layer.ln_1), ln2=ln(layer.ln_2),
            q=w[:d].contiguous(), k=w[d:2 * d].contiguous(), v=w[2 * d:].contiguous(),
            q_bias=bqkv[:d], k_bias=bqkv[d:2 * d], v_bias=bqkv[2 * d:],
            o=_t(at.c_proj.weight, dtype).T.contiguous(), o_bias=_t(at.c_proj.bias, dtype),
            up=_t(m.c_fc.weight, dtype).T.contiguous(), up_bias=_t(m.c_fc.bias, dtype),
            down=_t(m.c_proj.weight, dtype).T.contiguous(), down_bias=_t(m.c_proj.bias, dtype),
            scale=at.scaling,
        ))
    wpe = tr.wpe.weight

    def embed(ids: Tensor) -> Tensor:
        return (tr.wte(ids) + wpe[: ids.shape[-1]]).to(dtype)

    return Net(
        family="gpt2", blocks=blocks, final=ln(tr.ln_f), n_heads=n_heads, n_kv_heads=n_heads,
        d_head=d // n_heads, act=ACT_FACTORS[act_name], embed=embed,
        unembed=_t(hf.get_output_embeddings().weight, dtype),
        token_embeddings=_t(tr.wte.weight, dtype), has_bias=True,
        bias_note=("the input x_i is the token plus position embedding (blocks.0.hook_resid_pre); "
                   "LayerNorm betas and every linear bias, carried through the frozen network, "
                   "enter as one constant term c = F(0): y = sum_i J_i x_i + c"),
    )


def _gemma3(hf, dtype) -> Net:
    """Gemma 3 text: RMSNorm (1 + w), sandwich norms, QK-norm, GELU-tanh gate, local/global RoPE."""
    cfg = hf.config
    base = hf.model
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    if getattr(cfg, "use_bidirectional_attention", False):
        raise InterpError("Bidirectional Gemma 3 models are not causal LMs; linearise a causal one.")

    def rms(mod) -> Norm:
        return Norm("rms", 1.0 + _t(mod.weight, dtype), mod.eps)

    blocks = []
    for i, layer in enumerate(base.layers):
        a, m = layer.self_attn, layer.mlp
        blocks.append(Block(
            ln1=rms(layer.input_layernorm), ln2=rms(layer.pre_feedforward_layernorm),
            post_attn=rms(layer.post_attention_layernorm),
            post_mlp=rms(layer.post_feedforward_layernorm),
            q=_t(a.q_proj.weight, dtype), k=_t(a.k_proj.weight, dtype),
            v=_t(a.v_proj.weight, dtype), o=_t(a.o_proj.weight, dtype),
            q_bias=_t(a.q_proj.bias, dtype), k_bias=_t(a.k_proj.bias, dtype),
            v_bias=_t(a.v_proj.bias, dtype), o_bias=_t(a.o_proj.bias, dtype),
            up=_t(m.up_proj.weight, dtype), gate=_t(m.gate_proj.weight, dtype),
            down=_t(m.down_proj.weight, dtype),
            q_norm=rms(a.q_norm), k_norm=rms(a.k_norm), scale=a.scaling,
            window=a.sliding_window,  # HF's Gemma 3 never passes attn_logit_softcapping on
            rope_kind=cfg.layer_types[i],
        ))
    has_bias = _has_nonzero(*(x for b in blocks for x in (b.v_bias, b.o_bias)))
    return Net(
        family="gemma3", blocks=blocks, final=rms(base.norm), n_heads=n_heads, n_kv_heads=n_kv,
        d_head=cfg.head_dim, act=layer.mlp.act_fn,
        embed=lambda ids: base.embed_tokens(ids).to(dtype),  # includes the sqrt(d) scale
        unembed=_t(hf.get_output_embeddings().weight, dtype),
        token_embeddings=_t(base.embed_tokens.weight, dtype), rope_fn=_hf_rope(base.rotary_emb),
        has_bias=has_bias,
        bias_note="no biases on the linear path: exactly homogeneous (final logit softcap is "
                  "after the unembedding, outside y)",
    )


#: HF `model_type` -> reader. Adding a family means one function and one line here.
FAMILIES: dict[str, Callable] = {
    "llama": _llama, "mistral": _llama, "qwen2": _llama, "qwen3": _llama, "olmo": _llama,
    "gpt2": _gpt2, "gemma3_text": _gemma3,
}


def hf_model_of(model):
    """The Hugging Face causal LM behind a `HookedModel` (or the model itself)."""
    return getattr(model, "hf_model", model)


def read_net(model, dtype: torch.dtype | str = torch.float64) -> Net:
    """Read a `HookedModel` (or an HF causal LM) into the uniform form, weights in `dtype`."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    hf = hf_model_of(model)
    model_type = getattr(hf.config, "model_type", None)
    if model_type not in FAMILIES:
        raise InterpError(unknown_name_message(
            "model family for linearisation", str(model_type), FAMILIES,
            hint=f"Supported: {', '.join(sorted(FAMILIES))}. Add one in "
                 "interp/linearise/families.py (one reader function and one registry line).",
        ))
    with torch.no_grad():
        net = FAMILIES[model_type](hf, dtype)
    embed = net.embed

    def embed_detached(ids: Tensor) -> Tensor:  # the model's embedding weights need no grad here
        with torch.no_grad():
            return embed(ids)

    net.embed = embed_detached
    return net
