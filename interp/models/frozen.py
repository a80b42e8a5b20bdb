"""The frozen network: one forward pass of a `Net` with its nonlinear factors held fixed.

Golden (arXiv 2505.24293, §2) writes each nonlinearity as A(x)·x and freezes A at the operating
point x*; the attribution graphs of Ameisen et al. 2025 ("Circuit Tracing") freeze the same
factors to make the residual stream linear in its sources. The factors are, per block, the norm
scales s = 1/sqrt(var(x)+eps) (RMSNorm: x·s·w; LayerNorm: (x − mean x)·s·w), the attention
pattern P (softmax of QKᵀ after RoPE / QK-norm / soft-capping; detaching P is detaching Q and K,
since the mask is a constant) and the activated gate g (SwiGLU: SiLU(W_gate x); GeGLU: GELU-tanh;
ungated: act(h)/h). With those held the network is affine in its input embeddings.

`Frozen` records the factors. `run` computes the network in three modes: "detach" (values
unchanged, autograd sees the frozen linear map), "ordinary" (nothing frozen: the conventional
Jacobian, the paper's negative control) and "replay" (reuse recorded factors: the linear map
itself, on a batch of vectors, without autograd). Its `mlp` argument replaces each MLP branch by
a function of the MLP input: the attribution graph's replacement model is this network with
transcoders there. `interp.models.adjoint` is the transpose of the replayed map.

Sites (where outputs are read, canonical names): `blocks.{L}.hook_resid_post`,
`blocks.{L}.hook_attn_out` / `hook_mlp_out` (what each branch adds to the residual stream),
`blocks.{L}.mlp.hook_in` (the MLP's input, what a transcoder reads), `ln_final.hook_normalized`.
Shapes: x [*batch, pos, d_model] -> each site [*batch, pos, d_model].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.models.transformer import Attention, Block, Net, Norm

FINAL = "ln_final.hook_normalized"
_SITE = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_attn_out|hook_mlp_out|mlp\.hook_in)$")
_KIND = {"hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
         "hook_mlp_out": "mlp_out", "mlp.hook_in": "mlp_in"}
MODES = ("detach", "ordinary", "replay")
MLPFn = Callable[[int, Tensor], Tensor]


class Frozen:
    """The nonlinear factors at the operating point, keyed by where they sit (`"3.ln1"`, ...)."""

    def __init__(self, mode: str = "detach", values: dict[str, Tensor] | None = None):
        if mode not in MODES:
            raise InterpError(f"mode must be one of {MODES}, not {mode!r}.")
        self.mode = mode
        self.values: dict[str, Tensor] = dict(values or {})

    def __call__(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        if self.mode == "replay":
            try:
                return self.values[key]
            except KeyError:
                raise InterpError(f"No frozen factor {key!r}: record the operating point with a "
                                  "'detach' run that reaches this site first.") from None
        value = compute()
        if self.mode == "detach":
            value = value.detach()
        self.values[key] = value.detach()
        return value

    def replay(self) -> Frozen:
        return Frozen("replay", self.values)


def parse_site(site: str, n_layers: int) -> tuple[int, str]:
    """(layer, kind) of an output site; the final norm is layer n_layers, kind "final"."""
    if site == FINAL:
        return n_layers, "final"
    m = _SITE.match(site)
    if not m or int(m.group(1)) >= n_layers:
        valid = [FINAL] + [f"blocks.{{0..{n_layers - 1}}}.{k}" for k in _KIND]
        raise InterpError(f"Unknown output site {site!r}; valid: {', '.join(valid)}.")
    return int(m.group(1)), _KIND[m.group(2)]


def _lin(x: Tensor, w: Tensor, b: Tensor | None, bias: bool) -> Tensor:
    return F.linear(x, w, b if bias else None)


def norm(x: Tensor, n: Norm | None, fz: Frozen, key: str, bias: bool) -> Tensor:
    """A norm with its scale s recorded under `key` (identity when `n` is None)."""
    if n is None:
        return x
    if n.kind == "rms":
        s = fz(key, lambda: torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + n.eps))
        return x * s * n.weight
    x = x - x.mean(-1, keepdim=True)
    s = fz(key, lambda: torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + n.eps))
    out = x * s * n.weight
    return out + n.bias if bias and n.bias is not None else out


def heads(x: Tensor, n: int) -> Tensor:  # [..., pos, n*dh] -> [..., n, pos, dh]
    return x.unflatten(-1, (n, -1)).transpose(-3, -2)


def unheads(x: Tensor) -> Tensor:  # [..., n, pos, dh] -> [..., pos, n*dh]
    return x.transpose(-3, -2).flatten(-2)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_pairs(x: Tensor) -> Tensor:  # GPT-J: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def _rotary(net: Net, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    rd = cos.shape[-1]  # partial rotary: only the first rd dimensions turn
    rot = _rotate_pairs if net.rope_interleaved else _rotate_half
    r = x[..., :rd]
    r = r * cos + rot(r) * sin
    return r if rd == x.shape[-1] else torch.cat((r, x[..., rd:]), dim=-1)


def _qk_norm(x: Tensor, n: Norm | None, n_heads: int, per_head: bool) -> Tensor:
    """Queries or keys [..., pos, n*dh] split into heads [..., n, pos, dh], QK-normed."""
    if n is None:
        return heads(x, n_heads)
    fz = Frozen("ordinary")
    if per_head:
        return heads(norm(x.unflatten(-1, (n_heads, -1)), n, fz, "qk", True).flatten(-2), n_heads)
    return heads(norm(x, n, fz, "qk", True), n_heads)


def pattern(net: Net, at: Attention, a: Tensor) -> Tensor:
    """The attention pattern [*, heads, q, k] exactly as the model computes it."""
    n_pos = a.shape[-2]
    q = _qk_norm(_lin(a, at.q, at.q_bias, True), at.q_norm, net.n_heads, at.qk_norm_per_head)
    k = _qk_norm(_lin(a, at.k, at.k_bias, True), at.k_norm, net.n_kv_heads, at.qk_norm_per_head)
    if at.rope is not None:
        cos, sin = net.rope(n_pos, at.rope)
        q, k = _rotary(net, q, cos, sin), _rotary(net, k, cos, sin)
    k = k.repeat_interleave(net.n_heads // net.n_kv_heads, dim=-3)
    scores = (q @ k.transpose(-1, -2)) * at.scale
    if at.softcap is not None:
        scores = torch.tanh(scores / at.softcap) * at.softcap
    i = torch.arange(n_pos, device=a.device)
    allowed = i[None, :] <= i[:, None]
    if at.window is not None:
        allowed = allowed & (i[:, None] - i[None, :] < at.window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _attn(net: Net, blk: Block, i: int, a: Tensor, fz: Frozen, bias: bool) -> Tensor:
    """Attention branch from its normed input `a`: W_O · P · W_V a (+ post norm)."""
    at = blk.attn
    p = fz(f"{i}.attn", lambda: pattern(net, at, a))
    v = heads(_lin(a, at.v, at.v_bias, bias), net.n_kv_heads)
    v = v.repeat_interleave(net.n_heads // net.n_kv_heads, dim=-3)
    out = _lin(unheads(p @ v), at.o, at.o_bias, bias)
    return norm(out, blk.post_attn, fz, f"{i}.post_attn", bias)


def mlp_branch(blk: Block, i: int, u: Tensor, fz: Frozen, bias: bool) -> Tensor:
    """MLP branch from its input `u`: W_down (g ⊙ W_up u) (+ post norm), g frozen."""
    m = blk.mlp
    up = _lin(u, m.up, m.up_bias, bias)
    if m.gate is not None:
        g = fz(f"{i}.gate", lambda: m.act(_lin(u, m.gate, m.gate_bias, True)))
    else:  # ungated: act(h) = h * factor(h), with h the full pre-activation
        g = fz(f"{i}.gate", lambda: m.act(up if bias else _lin(u, m.up, m.up_bias, True)))
    out = _lin(g * up, m.down, m.down_bias, bias)
    return norm(out, blk.post_mlp, fz, f"{i}.post_mlp", bias)


def run(net: Net, x: Float[Tensor, "*batch pos d_model"], fz: Frozen,
        sites: Sequence[str] = (FINAL,), bias: bool = True, mlp: MLPFn | None = None
        ) -> dict[str, Tensor]:
    """Run the network from input embeddings and return {site: [*batch, pos, d_model]}.

    `bias=False` drops every bias term (only meaningful in "replay" mode: the linear part of the
    frozen affine map). `mlp(layer, u)`, when given, replaces each MLP branch (post norm
    included) by a function of its input u. The pass stops after the deepest requested site.
    """
    parsed = {s: parse_site(s, net.n_layers) for s in sites}
    last = max(layer for layer, _ in parsed.values())
    want = {(layer, kind): s for s, (layer, kind) in parsed.items()}
    out: dict[str, Tensor] = {}
    h = x
    for i, blk in enumerate(net.blocks[: min(last + 1, net.n_layers)]):
        a_in = norm(h, blk.ln1, fz, f"{i}.ln1", bias)
        attn = _attn(net, blk, i, a_in, fz, bias)
        if blk.parallel:
            u = a_in if blk.shared_norm else norm(h, blk.ln2, fz, f"{i}.ln2", bias)
        else:
            h = h + attn
            u = norm(h, blk.ln2, fz, f"{i}.ln2", bias)
        m = mlp(i, u) if mlp is not None else mlp_branch(blk, i, u, fz, bias)
        h = h + attn + m if blk.parallel else h + m
        for kind, value in (("attn_out", attn), ("mlp_out", m), ("mlp_in", u), ("resid_post", h)):
            if (i, kind) in want:
                out[want[(i, kind)]] = value
    if (net.n_layers, "final") in want:
        out[FINAL] = norm(h, net.final, fz, "final", bias)
    return out
