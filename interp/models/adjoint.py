"""The one adjoint of the frozen network: Jᵀ applied by hand, for linearisation and attribution.

With its factors frozen (`interp.models.frozen`), the network is linear in what is written to
its residual stream; `Adjoint` applies the transpose of that map, position-major
(G [pos, batch, d_model]), block by block from the top down. A block's transpose is

    sequential:  G ← G + mlpᵀ(G);  G ← G + attnᵀ(G)          parallel: G ← G + mlpᵀ(G) + attnᵀ(G)

where attnᵀ and mlpᵀ are the branches' adjoints through their norms (frozen scales). The frozen
norm's adjoint is g ↦ s · (g diag(w) C) (C centres for LayerNorm), so ln1's w and C are folded
into W_V, ln1's scale s[k] and the post-attention norm's s[q] into the transposed pattern, and
ln2's (and the post-MLP norm's) scale into the frozen gate, once per operating point.

`backward` takes three hooks, so both users share the pass:
- `mlp_t(layer, G, at)`: the MLP branch's adjoint (default: the frozen MLP, linearisation); the
  attribution graph's replacement model passes its transcoders' skip paths, since features and
  error nodes are sources, not paths;
- `read(layer, G)`: called with the cotangent of what layer L's MLP branch writes, before the
  branch is crossed (attribution reads its source rows there: per-layer transcoder features;
  a cross-layer transcoder's features, which write to every layer ≥ their own, read at each);
- `inject(layer, G)`: adds cotangents at layer L's MLP input (transcoder-input targets), with
  `ln2ᵀ` to bring them to the residual stream.
`at[b]`: on the pass's first block, row b is non-zero only at position at[b] (one target per
row), so the branches run on those B vectors alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.models.frozen import parse_site
from interp.models.transformer import Net, Norm

MLPAdjoint = Callable[[int, Tensor, "Tensor | None"], "Tensor | None"]


@dataclass
class _Layer:
    """One block's adjoint pieces at the operating point (see `Adjoint.layer`)."""

    AT: Tensor  # [heads, k, q]: pattern transposed, row k times ln1's s[k], column q times post s[q]
    V: Tensor  # [n_kv * d_head, d_model]: W_V with ln1's weight and centring folded in
    gate: Tensor  # [pos, d_mlp]: frozen gate times ln2's and the post-MLP norm's scales
    s2: Tensor  # [pos]: ln2's frozen scale (ones without ln2)


def _center(x: Tensor, n: Norm | None) -> Tensor:
    return x - x.mean(-1, keepdim=True) if n is not None and n.kind == "layer" else x


def norm_weight_in(g: Tensor, n: Norm | None) -> Tensor:
    """g diag(w) C: the frozen norm's adjoint without its scale."""
    return g if n is None else _center(g * n.weight, n)


class Adjoint:
    """The transpose of the frozen network's linear map at one operating point.

    `values`: the factors a "detach" `run` recorded (`Frozen.values`) on one prompt [pos, d].
    """

    def __init__(self, net: Net, values: dict[str, Tensor]):
        self.net, self.v = net, values
        self._layers: dict[int, _Layer] = {}

    def _scale(self, key: str, n: Norm | None, n_pos: int) -> Tensor:
        if n is None:
            return torch.ones(n_pos, dtype=self.net.dtype)
        return self.v[key][..., 0]

    def layer(self, i: int) -> _Layer:
        """Block i's pieces with the frozen norms folded in, made once."""
        if i not in self._layers:
            blk, v = self.net.blocks[i], self.v
            p = v[f"{i}.attn"]  # [heads, q, k]
            n = p.shape[-1]
            s1 = self._scale(f"{i}.ln1", blk.ln1, n)
            spa = self._scale(f"{i}.post_attn", blk.post_attn, n)
            s2 = self._scale(f"{i}.ln1" if blk.shared_norm else f"{i}.ln2", blk.ln2, n)
            spm = self._scale(f"{i}.post_mlp", blk.post_mlp, n)
            AT = p.transpose(-1, -2) * s1[None, :, None] * spa[None, None, :]
            self._layers[i] = _Layer(
                AT=AT.contiguous(), V=norm_weight_in(blk.attn.v, blk.ln1).contiguous(),
                gate=v[f"{i}.gate"] * (s2 * spm)[:, None], s2=s2)
        return self._layers[i]

    # ------------------------------------------------------------------ the pieces
    def norm_t(self, g: Tensor, n: Norm | None, s: Tensor) -> Tensor:
        """Adjoint of a frozen norm: g [..., d] with its scales s [...] (broadcast)."""
        return g if n is None else norm_weight_in(g, n) * s.unsqueeze(-1)

    def final_t(self, g: Float[Tensor, "b d"], pos: Int[Tensor, "b"]) -> Tensor:
        return self.norm_t(g, self.net.final, self.v["final"][pos, 0])

    def ln2_t(self, i: int, g: Float[Tensor, "b d"], pos: Int[Tensor, "b"]) -> Tensor:
        """Cotangents on layer i's MLP input at positions `pos`, moved to the residual stream."""
        return self.norm_t(g, self.net.blocks[i].ln2, self.layer(i).s2[pos])

    def fold_ln2(self, i: int, W: Float[Tensor, "d_out d_in"]) -> Tensor:
        """W (a map from layer i's MLP input) with ln2's weight and centring folded in; the
        product G @ result times `layer(i).s2` is then ln2ᵀ of G @ W."""
        return norm_weight_in(W, self.net.blocks[i].ln2)

    def attn_t(self, i: int, G: Float[Tensor, "pos b d"], at: Tensor | None = None,
               out: Tensor | None = None) -> None:
        """Adds the attention branch's adjoint (ln1 included) of G to `out` (default: G)."""
        net, blk, lay = self.net, self.net.blocks[i], self.layer(i)
        P, B, d = G.shape
        H, n_kv = net.n_heads, net.n_kv_heads
        AT = lay.AT[:, :P, :P]  # [H, k, q]
        if at is not None:
            g = norm_weight_in(G[at, torch.arange(B)], blk.post_attn)  # [B, d]
            gz = (g @ blk.attn.o).view(B, H, -1)
            gv = AT[:, :, at].permute(1, 2, 0).unsqueeze(-1) * gz  # [P, B, H, dh]
        else:
            g = norm_weight_in(G, blk.post_attn).reshape(P * B, d)
            gz = (g @ blk.attn.o).view(P, B, H, -1).permute(2, 0, 1, 3)  # [H, q, B, dh]
            gv = torch.bmm(AT, gz.reshape(H, P, -1)).view(H, P, B, -1).permute(1, 2, 0, 3)
        if n_kv != H:  # heads sharing a kv head (GQA) add up there
            gv = gv.reshape(P, B, n_kv, H // n_kv, -1).sum(3)
        (G if out is None else out).view(P * B, d).addmm_(gv.reshape(P * B, -1), lay.V)

    def mlp_t(self, i: int, G: Float[Tensor, "pos b d"], at: Tensor | None = None) -> Tensor:
        """The frozen MLP branch's adjoint (post norm and ln2 included), as a new tensor."""
        blk, lay = self.net.blocks[i], self.layer(i)
        m = blk.mlp
        if at is not None:
            B = G.shape[1]
            rows = torch.arange(B)
            g = norm_weight_in(G[at, rows], blk.post_mlp)  # [B, d]
            out = torch.zeros_like(G)
            out[at, rows] = norm_weight_in(((g @ m.down) * lay.gate[at]) @ m.up, blk.ln2)
            return out
        P = G.shape[0]
        h = (norm_weight_in(G, blk.post_mlp) @ m.down) * lay.gate[:P, None, :]
        return norm_weight_in(h @ m.up, blk.ln2)

    # ------------------------------------------------------------------ the pass
    def backward(self, G: Float[Tensor, "pos b d"], top: int, at: Tensor | None = None,
                 mlp_t: MLPAdjoint | None = None, read: Callable | None = None,
                 inject: Callable | None = None) -> Float[Tensor, "pos b d"]:
        """Cotangent G of blocks.{top}.hook_resid_post to the input embeddings, in place."""
        mlp_t = self.mlp_t if mlp_t is None else mlp_t
        for i in range(top, -1, -1):
            blk = self.net.blocks[i]
            first = at if i == top else None
            if read is not None:
                read(i, G)
            m = mlp_t(i, G, first)
            if blk.parallel:
                self.attn_t(i, G, first)
                if m is not None:
                    G += m
                if inject is not None:
                    inject(i, G)
            else:
                if m is not None:
                    G += m
                if inject is not None:
                    inject(i, G)
                self.attn_t(i, G, first)
        return G

    def site(self, g: Float[Tensor, "b d"], site: str, position: int, n_pos: int
             ) -> Float[Tensor, "pos b d"]:
        """Jᵀg for the map from the inputs to `site` at `position` (g: one cotangent per row)."""
        net = self.net
        layer, kind = parse_site(site, net.n_layers)
        B = g.shape[0]
        at = torch.full((B,), position, dtype=torch.long)
        G = g.new_zeros(n_pos, B, g.shape[-1])
        if kind == "final":
            G[position] = self.final_t(g, at)
            return self.backward(G, net.n_layers - 1, at)
        G[position] = g
        if kind == "resid_post":
            return self.backward(G, layer, at)
        blk = net.blocks[layer]
        if kind == "mlp_in":  # cotangent on the MLP input: through ln2, then what feeds it
            G[position] = self.ln2_t(layer, g, at)
            if not blk.parallel:
                self.attn_t(layer, G, at)
        elif kind == "attn_out":  # only the attention branch of this block
            out = torch.zeros_like(G)
            self.attn_t(layer, G, at, out=out)
            G = out
        else:  # mlp_out: the MLP branch, and (sequential) the attention below its input
            G = self.mlp_t(layer, G, at)
            if not blk.parallel:
                self.attn_t(layer, G, at)
        return self.backward(G, layer - 1) if layer > 0 else G

