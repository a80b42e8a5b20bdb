"""The detached forward pass and its exact linear map (forward products and the adjoint).

Golden (arXiv 2505.24293, §2; the detach rules in docs/linearise.md): write each nonlinearity
as A(x)·x and freeze A at the operating point x*. The frozen factors are, per block, the norm
scales s = 1/sqrt(var(x)+eps)
(RMSNorm: x·s·w; LayerNorm: (x − mean x)·s·w), the attention pattern P (softmax of QKᵀ after
RoPE; detaching P is detaching Q and K, since the mask is a constant) and the activated gate g
(SwiGLU: SiLU(W_gate x); GeGLU: GELU-tanh(W_gate x); ungated GELU: the factor GELU(h)/h). With
those held, the network is linear (affine when it has biases) in the input embeddings.

`Frozen` records those factors. One function, `run`, computes the network in three modes:
"detach" (the paper's detached forward: values unchanged, autograd sees a linear map),
"ordinary" (no detach: the conventional Jacobian, the paper's negative control) and "replay"
(reuse recorded factors: the linear map itself, applied to a batch of vectors at the cost of a
plain forward pass and without autograd). `adjoint` applies the transpose of the replayed map
by hand, so J^T u costs one pass too and keeps no activations.

Shapes: inputs x are [*batch, pos, d_model]; outputs are read at canonical hook names
(`blocks.{L}.hook_resid_post`, `blocks.{L}.hook_attn_out`, `blocks.{L}.hook_mlp_out` (what the
block adds to the residual stream), `ln_final.hook_normalized`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.linearise.families import Block, Net, Norm

FINAL = "ln_final.hook_normalized"
_SITE = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_attn_out|hook_mlp_out)$")
MODES = ("detach", "ordinary", "replay")


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
        valid = [FINAL] + [f"blocks.{{0..{n_layers - 1}}}.{k}" for k in
                           ("hook_resid_post", "hook_attn_out", "hook_mlp_out")]
        raise InterpError(f"Unknown output site {site!r}; valid: {', '.join(valid)}.")
    return int(m.group(1)), m.group(2).removeprefix("hook_")


def _lin(x: Tensor, w: Tensor, b: Tensor | None, bias: bool) -> Tensor:
    return F.linear(x, w, b if bias else None)


def _norm(x: Tensor, n: Norm, fz: Frozen, key: str, bias: bool) -> Tensor:
    if n.kind == "rms":
        s = fz(key, lambda: torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + n.eps))
        return x * s * n.weight
    x = x - x.mean(-1, keepdim=True)
    s = fz(key, lambda: torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + n.eps))
    out = x * s * n.weight
    return out + n.bias if bias and n.bias is not None else out


def _norm_adjoint(g: Tensor, n: Norm, s: Tensor) -> Tensor:
    g = g * n.weight * s
    return g - g.mean(-1, keepdim=True) if n.kind == "layer" else g


def _heads(x: Tensor, n: int) -> Tensor:  # [..., pos, n*dh] -> [..., n, pos, dh]
    return x.unflatten(-1, (n, -1)).transpose(-3, -2)


def _unheads(x: Tensor) -> Tensor:  # [..., n, pos, dh] -> [..., pos, n*dh]
    return x.transpose(-3, -2).flatten(-2)


def _pattern(net: Net, blk: Block, a: Tensor) -> Tensor:
    """The attention pattern [*, heads, q, k] exactly as the model computes it."""
    n_pos = a.shape[-2]
    q = _heads(_lin(a, blk.q, blk.q_bias, True), net.n_heads)
    k = _heads(_lin(a, blk.k, blk.k_bias, True), net.n_kv_heads)
    if blk.q_norm is not None:
        q = _norm(q, blk.q_norm, Frozen("ordinary"), "q", True)
        k = _norm(k, blk.k_norm, Frozen("ordinary"), "k", True)
    if blk.rope_kind is not None:
        cos, sin = net.rope(n_pos, blk.rope_kind)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(net.n_heads // net.n_kv_heads, dim=-3)
    scores = (q @ k.transpose(-1, -2)) * blk.scale
    if blk.softcap is not None:
        scores = torch.tanh(scores / blk.softcap) * blk.softcap
    i = torch.arange(n_pos, device=a.device)
    allowed = i[None, :] <= i[:, None]
    if blk.window is not None:
        allowed = allowed & (i[:, None] - i[None, :] < blk.window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _attn(net: Net, blk: Block, i: int, h: Tensor, fz: Frozen, bias: bool) -> Tensor:
    a = _norm(h, blk.ln1, fz, f"{i}.ln1", bias)
    p = fz(f"{i}.attn", lambda: _pattern(net, blk, a))
    v = _heads(_lin(a, blk.v, blk.v_bias, bias), net.n_kv_heads)
    v = v.repeat_interleave(net.n_heads // net.n_kv_heads, dim=-3)
    out = _lin(_unheads(p @ v), blk.o, blk.o_bias, bias)
    return out if blk.post_attn is None else _norm(out, blk.post_attn, fz, f"{i}.post_attn", bias)


def _mlp(net: Net, blk: Block, i: int, h: Tensor, fz: Frozen, bias: bool) -> Tensor:
    m = _norm(h, blk.ln2, fz, f"{i}.ln2", bias)
    up = _lin(m, blk.up, blk.up_bias, bias)
    if blk.gate is not None:
        g = fz(f"{i}.gate", lambda: net.act(_lin(m, blk.gate, blk.gate_bias, True)))
    else:  # ungated: act(h) = h * factor(h), with h the full pre-activation
        g = fz(f"{i}.gate", lambda: net.act(up if bias else _lin(m, blk.up, blk.up_bias, True)))
    out = _lin(g * up, blk.down, blk.down_bias, bias)
    return out if blk.post_mlp is None else _norm(out, blk.post_mlp, fz, f"{i}.post_mlp", bias)


def run(net: Net, x: Float[Tensor, "*batch pos d_model"], fz: Frozen,
        sites: Sequence[str] = (FINAL,), bias: bool = True) -> dict[str, Tensor]:
    """Run the network from input embeddings and return {site: [*batch, pos, d_model]}.

    `bias=False` drops every bias term (only meaningful in "replay" mode: the linear part of the
    frozen affine map). The pass stops after the deepest requested site.
    """
    parsed = {s: parse_site(s, net.n_layers) for s in sites}
    last = max(layer for layer, _ in parsed.values())
    want = {(layer, kind): s for s, (layer, kind) in parsed.items()}
    out: dict[str, Tensor] = {}
    h = x
    for i, blk in enumerate(net.blocks[: min(last + 1, net.n_layers)]):
        attn = _attn(net, blk, i, h, fz, bias)
        h = h + attn
        mlp = _mlp(net, blk, i, h, fz, bias)
        h = h + mlp
        for kind, value in (("attn_out", attn), ("mlp_out", mlp), ("resid_post", h)):
            if (i, kind) in want:
                out[want[(i, kind)]] = value
    if (net.n_layers, "final") in want:
        out[FINAL] = _norm(h, net.final, fz, "final", bias)
    return out


def adjoint(net: Net, g: Float[Tensor, "batch d_model"], fz: Frozen, site: str, position: int,
            n_pos: int) -> Float[Tensor, "batch pos d_model"]:
    """Jᵀg for the replayed linear map from the inputs to `site` at `position`, by hand.

    `g` [batch, d_model] is a cotangent at that one position; the result is [batch, pos, d].
    Tested against autograd's VJP of the detached forward.
    """
    layer, kind = parse_site(site, net.n_layers)
    v = fz.values
    gh = g.new_zeros(g.shape[0], n_pos, g.shape[-1])
    if kind == "final":
        gh[:, position] = _norm_adjoint(g, net.final, v["final"][..., position, :])
        top = net.n_layers - 1
    else:
        top = layer
        gh[:, position] = g
        blk = net.blocks[layer]
        if kind == "attn_out":  # only the attention branch of this block
            return _below(net, _attn_adjoint(net, blk, layer, gh, v), v, layer - 1)
        if kind == "mlp_out":
            gh = _mlp_adjoint(blk, layer, gh, v)
            gh = gh + _attn_adjoint(net, blk, layer, gh, v)
            return _below(net, gh, v, layer - 1)
    return _below(net, gh, v, top, position)


def _below(net: Net, gh: Tensor, v: dict, top: int, position: int | None = None) -> Tensor:
    """Adjoint through blocks top..0. `position`: gh is non-zero only there on entry, so the
    top block's MLP and attention output map run on that one position."""
    for i in range(top, -1, -1):
        blk = net.blocks[i]
        if i == top and position is not None:
            at = slice(position, position + 1)
            one = {key: val[..., at, :] for key, val in v.items()
                   if key in (f"{i}.post_mlp", f"{i}.gate", f"{i}.ln2")}
            gh[:, at] += _mlp_adjoint(blk, i, gh[:, at], one)
            gh = _attn_adjoint(net, blk, i, gh, v, at=position) + gh
            continue
        gh = gh + _mlp_adjoint(blk, i, gh, v)
        gh = gh + _attn_adjoint(net, blk, i, gh, v)
    return gh


def _mlp_adjoint(blk: Block, i: int, go: Tensor, v: dict) -> Tensor:
    if blk.post_mlp is not None:
        go = _norm_adjoint(go, blk.post_mlp, v[f"{i}.post_mlp"])
    gu = (go @ blk.down) * v[f"{i}.gate"]
    return _norm_adjoint(gu @ blk.up, blk.ln2, v[f"{i}.ln2"])


def _attn_adjoint(net: Net, blk: Block, i: int, go: Tensor, v: dict,
                  at: int | None = None) -> Tensor:
    """`at`: go is non-zero only at that position (the output map then runs there alone, on
    that query's row of the pattern)."""
    post, pattern = v.get(f"{i}.post_attn"), v[f"{i}.attn"]  # pattern [.., heads, q, k]
    if at is not None:
        go, pattern = go[:, at: at + 1], pattern[..., at: at + 1, :]
        post = None if post is None else post[..., at: at + 1, :]
    if blk.post_attn is not None:
        go = _norm_adjoint(go, blk.post_attn, post)
    gz = _heads(go @ blk.o, net.n_heads)  # [b, heads, q, dh]
    gv = pattern.transpose(-1, -2) @ gz  # [b, heads, pos, dh]
    rep = net.n_heads // net.n_kv_heads
    gv = gv.unflatten(-3, (net.n_kv_heads, rep)).sum(-3)
    return _norm_adjoint(_unheads(gv) @ blk.v, blk.ln1, v[f"{i}.ln1"])
