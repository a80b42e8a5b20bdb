"""The uniform description of a decoder-only transformer that the frozen network runs.

Every family adapter (`interp.models.families`) reads its Hugging Face model into this form.
A block is

    a = post_attn( W_O · P · W_V · ln1(h) )        P: softmax pattern of (RoPE'd, QK-normed) Q Kᵀ
    m = post_mlp( W_down · (g ⊙ W_up · ln2(·)) )     g: activated gate (gated) or act(h)/h (ungated)
    sequential: h ← h + a, then h ← h + m(ln2(h));   parallel: h ← h + a + m(ln2(h_in))

with any norm optional (OLMo 2 has only post-norms; GPT-J and Phi-2 share ln1 with the MLP:
`ln2 is ln1`), biases optional, RMSNorm / LayerNorm (Gemma's 1 + w folded into the weight),
learned absolute positions (`pos_embed`) or rotary ones (full, partial, or GPT-J's interleaved
pairs), GQA, QK-norm per head or over the whole projection, sliding windows and attention-logit
soft-capping. The output is `final(h)`; logits are `unembed · final(h) + unembed_bias`, soft-capped
for Gemma 2. Weights are [out, in] matrices (nn.Linear layout) in the analysis dtype.
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
class Attention:
    q: Tensor
    k: Tensor
    v: Tensor
    o: Tensor
    q_bias: Tensor | None = None
    k_bias: Tensor | None = None
    v_bias: Tensor | None = None
    o_bias: Tensor | None = None
    q_norm: Norm | None = None  # QK-norm (Qwen 3, Gemma 3, OLMo 2, Phi with qk_layernorm)
    k_norm: Norm | None = None
    qk_norm_per_head: bool = True  # False: over the whole projection (OLMo 2)
    scale: float = 1.0  # attention logit scale
    softcap: float | None = None  # Gemma 2: scores = c · tanh(scores / c)
    window: int | None = None  # sliding window: key k is seen by query q when q - k < window
    rope: str | None = None  # key for `Net.rope`; None: no rotary embedding


@dataclass
class MLP:
    up: Tensor
    down: Tensor
    act: Callable[[Tensor], Tensor]  # gated: the activation; ungated: the factor act(h) / h
    gate: Tensor | None = None  # gated MLP (SwiGLU / GeGLU)
    up_bias: Tensor | None = None
    gate_bias: Tensor | None = None
    down_bias: Tensor | None = None


@dataclass
class Block:
    attn: Attention
    mlp: MLP
    ln1: Norm | None
    ln2: Norm | None  # `ln2 is ln1`: one norm feeds both branches (GPT-J, Phi-2)
    post_attn: Norm | None = None  # sandwich / post norms (Gemma 2-3, OLMo 2)
    post_mlp: Norm | None = None
    parallel: bool = False  # attention and MLP both read the block's input (GPT-NeoX, GPT-J, Phi)

    @property
    def shared_norm(self) -> bool:
        return self.ln2 is self.ln1 and self.ln1 is not None


@dataclass
class Net:
    """A decoder read into the uniform form, with what it needs around the blocks."""

    family: str
    blocks: list[Block]
    final: Norm
    n_heads: int
    n_kv_heads: int
    d_head: int
    embed_tokens: Callable[[Tensor], Tensor]  # ids [pos] -> [pos, d_model] (Gemma's √d included)
    unembed: Tensor  # [vocab, d_model]: logits = unembed @ final-norm output (+ unembed_bias)
    token_embeddings: Tensor  # [vocab, d_model]: rows that right singular vectors decode to
    pos_embed: Tensor | None = None  # learned absolute positions [n_ctx, d_model], row i: position i
    unembed_bias: Tensor | None = None
    logit_softcap: float | None = None
    rope_fn: Callable[[int, str], tuple[Tensor, Tensor]] | None = None
    rope_interleaved: bool = False  # GPT-J rotates pairs (2i, 2i+1); the others halves
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

    def embed(self, ids: Tensor) -> Tensor:
        """The input x of the network: token embeddings plus learned positions (if any)."""
        with torch.no_grad():
            x = self.embed_tokens(ids).to(self.dtype)
            if self.pos_embed is not None:
                x = x + self.pos_embed[: ids.shape[-1]]
        return x

    def logits(self, y: Tensor, bias: bool = True) -> Tensor:
        """Logits from final-norm outputs y [..., d_model] (before any soft-cap)."""
        out = y @ self.unembed.T
        return out + self.unembed_bias if bias and self.unembed_bias is not None else out

    def cap(self, logits: Tensor) -> Tensor:
        """Gemma 2's final soft-cap c · tanh(logits / c) (identity for other families)."""
        c = self.logit_softcap
        return torch.tanh(logits / c) * c if c else logits

    def rope(self, n_pos: int, kind: str) -> tuple[Tensor, Tensor]:
        key = (n_pos, kind)
        if key not in self._rope_cache:
            cos, sin = self.rope_fn(n_pos, kind)
            self._rope_cache[key] = (cos.to(self.dtype), sin.to(self.dtype))
        return self._rope_cache[key]

    @property
    def has_bias(self) -> bool:
        """Whether the frozen map is affine rather than linear in x (biases on its linear path)."""
        ts = [self.final.bias]
        for b in self.blocks:
            ts += [b.attn.v_bias, b.attn.o_bias, b.mlp.up_bias, b.mlp.down_bias]
            ts += [n.bias for n in (b.ln1, b.ln2, b.post_attn, b.post_mlp) if n is not None]
        return any(t is not None and bool(t.abs().max() > 0) for t in ts)

    @property
    def bias_note(self) -> str:
        pos = ("the input x_i is the token plus position embedding (blocks.0.hook_resid_pre); "
               if self.pos_embed is not None else "")
        if not self.has_bias:
            return pos + "no biases on the linear path: exactly homogeneous"
        return (pos + "norm and linear biases, carried through the frozen network, enter as one "
                "constant term c = F(0): y = sum_i J_i x_i + c")


# ------------------------------------------------------------------------- readers' helpers
def tensor(p, dtype: torch.dtype) -> Tensor | None:
    """A parameter as a detached tensor in `dtype` (shares storage when the dtype matches)."""
    return None if p is None else p.detach().to(dtype)


def linear(mod, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """(weight [out, in], bias) of an nn.Linear."""
    return tensor(mod.weight, dtype), tensor(getattr(mod, "bias", None), dtype)


def rms_norm(mod, dtype: torch.dtype, plus_one: bool = False) -> Norm:
    """An RMSNorm module; `plus_one`: Gemma's weight 1 + w."""
    w = tensor(mod.weight, dtype)
    eps = getattr(mod, "variance_epsilon", None) or getattr(mod, "eps", None) or 1e-6
    return Norm("rms", 1.0 + w if plus_one else w, float(eps))


def layer_norm(mod, dtype: torch.dtype, d: int | None = None, eps: float | None = None) -> Norm:
    """A LayerNorm module (a parameter-free one, as OLMo's, gets weight 1)."""
    w = getattr(mod, "weight", None)
    weight = tensor(w, dtype) if w is not None else torch.ones(d, dtype=dtype)
    eps = eps if eps is not None else getattr(mod, "eps", 1e-5)
    return Norm("layer", weight, float(eps), tensor(getattr(mod, "bias", None), dtype))


def hf_rope(rotary) -> Callable[[int, str], tuple[Tensor, Tensor]]:
    """cos/sin [n_pos, rotary_dim] from the model's own rotary module (any RoPE scaling type;
    partial rotary gives a rotary_dim below d_head)."""

    def rope(n_pos: int, kind: str):
        probe = torch.zeros(1, dtype=torch.float32)
        pos = torch.arange(n_pos).unsqueeze(0)
        with torch.no_grad():
            cos, sin = rotary(probe, pos) if kind == "default" else rotary(probe, pos, kind)
        return cos[0], sin[0]

    return rope


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


def act_factor(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACT_FACTORS:
        raise InterpError(unknown_name_message(
            "MLP activation", name, ACT_FACTORS,
            hint="Add its factor act(h)/h to ACT_FACTORS in interp/models/transformer.py."))
    return ACT_FACTORS[name]
