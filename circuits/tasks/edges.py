"""The edge-masked forward pass of a task model, in two forms.

`reference_logits` materialises every receiver's input, in_r = sum_s C_s + sum_s mask[r, s]
(out_s - C_s) (a [masks, receivers, batch, pos, d_model] tensor per layer), then LayerNorms it:
the formula as written, and the path that hands receiver inputs to autograd (EAP-IG).

`factorised_logits` gives the same numbers without materialising the head inputs. A head reads
LN(in_r) W, and LayerNorm is linear once its scale is known: with centred vectors
v~ = v - mean(v), in_r~ = sum_j c_rj v_j~ over the vectors v_j (the corrupted sum, then each
sender's out_s - C_s) with coefficients c_r = (1, mask[r, :]), so

    LN(in_r) W = (sum_j c_rj (v_j~ diag(w) W)) / sigma_r + b W,
    sigma_r^2 = c_r^T G c_r / d + eps,     G_jk = <v_j~, v_k~>,

i.e. each vector is projected once onto every head's (LayerNorm-scaled) W_Q, W_K, W_V, and a
receiver costs a d_head-sized mix plus a quadratic form in the small Gram matrix G, instead of
a d_model-sized mix and a LayerNorm. MLP and logit inputs (one receiver each) are materialised.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import ConfigError


def _centred(v: Tensor) -> Tensor:
    return v - v.mean(-1, keepdim=True)


def layer_norm(x: Tensor, p) -> Tensor:
    """TransformerLens's LayerNorm (eps 1e-5) with the parameters `p.w`, `p.b`."""
    x = _centred(x)
    return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * p.w + p.b


def reference_logits(
    model,
    edge_masks: Float[Tensor, "n_masks n_edges"],
    corrupt: Float[Tensor, "n_senders batch pos d_model"],
    clean: Float[Tensor, "n_senders batch pos d_model"],
    start_layer: int = 0,
    embed: Float[Tensor, "n_masks batch pos d_model"] | None = None,
    inputs: list | None = None,
    all_positions: bool = False,
) -> Float[Tensor, "n_masks batch d_vocab"]:
    """The masked forward with every receiver's input materialised (see
    `TinyTransformer.masked_logits`): the plain reading of the formula, and the path that
    exposes receiver inputs to autograd.

    Senders before `start_layer`'s first node keep their clean outputs (`clean`, a cache
    from `sender_outputs`): start at the first layer that a mask touches. `embed`
    replaces the input node's output per mask (EAP-IG interpolates it). If `inputs` is a
    list, every receiver input is appended to it as (receiver ids, tensor [n_masks,
    receivers, batch, pos, d], position slice) so gradients can be taken with respect to
    them.
    """
    c = model.cfg
    # shared: out_s - C_s of senders kept clean, the same for every mask; own: out_s - C_s of
    # the senders computed in this run, per mask
    dense, first, shared, own = _setup(model, edge_masks, corrupt, clean, start_layer, embed)
    csum = corrupt.cumsum(0)

    def mix(recv: list[int], n: int, pos: slice = slice(None)) -> Tensor:
        x = _mix(dense, csum, shared, own, first, recv, n, pos)
        if inputs is not None:
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            inputs.append((recv, x, pos))
        return x

    for layer in range(start_layer, c.n_layers):
        info, blk = model._layers[layer], model.blocks[layer]
        n = info["n_attn_in"]
        xq, xk, xv = (mix(info[port], n) for port in ("q", "k", "v"))
        out, _ = model._attention(layer_norm(xq, blk.ln1), layer_norm(xk, blk.ln1),
                                  layer_norm(xv, blk.ln1), blk.attn)
        own += list(out.transpose(0, 1) - corrupt[info["heads"]].unsqueeze(1))
        if c.d_mlp:
            x = mix([info["mlp_recv"]], info["n_mlp_in"])[:, 0]
            own.append(model._mlp(x, blk) - corrupt[info["mlp"]])
    x = mix([model._logits_recv], model.n_senders,
            slice(None) if all_positions else slice(-1, None))[:, 0]
    x = x if all_positions else x[:, :, 0]
    return layer_norm(x, model.ln_final) @ model.unembed.W_U + model.unembed.b_U


def _mix(dense: Tensor, csum: Tensor, shared: Tensor, own: list[Tensor], first: int,
         recv: list[int], n: int, pos: slice = slice(None)) -> Tensor:
    """Inputs [M, len(recv), B, P', D] of receivers `recv` reading senders [0, n): the corrupted
    sum plus each sender's masked out_s - C_s (`shared` for senders before `first`, `own`
    after)."""
    M = dense.shape[0]
    mrow = dense[:, recv, :n]
    x = csum[n - 1, :, pos].expand(M, len(recv), *csum[n - 1, :, pos].shape)
    n0 = min(first, n)
    if n0:
        x = x + torch.einsum("mrs,sbpd->mrbpd", mrow[..., :n0], shared[:n0, :, pos])
    if n > first:
        x = x + torch.einsum("mrs,smbpd->mrbpd", mrow[..., first:n],
                             torch.stack([o[:, :, pos] for o in own[: n - first]]))
    return x


def _setup(model, edge_masks, corrupt, clean, start_layer, embed):
    c = model.cfg
    first = (model._layers[start_layer]["heads"][0] if start_layer < c.n_layers
             else model.n_senders)
    if embed is not None:
        if start_layer != 0:
            raise ConfigError("An `embed` override needs start_layer=0.")
        first = 0
    own: list[Tensor] = []
    if embed is not None:
        own.append(embed - corrupt[0])
    return model.dense_masks(edge_masks), first, clean[:first] - corrupt[:first], own


def factorised_logits(
    model,
    edge_masks: Float[Tensor, "n_masks n_edges"],
    corrupt: Float[Tensor, "n_senders batch pos d_model"],
    clean: Float[Tensor, "n_senders batch pos d_model"],
    start_layer: int = 0,
    embed: Float[Tensor, "n_masks batch pos d_model"] | None = None,
    all_positions: bool = False,
    cache: dict | None = None,
) -> Tensor:
    """`reference_logits` without materialised head inputs (see the module docstring).

    `cache`, a dict kept by the caller for as long as `corrupt` and `clean` stay the same,
    holds what does not depend on the masks (cumulative sums, projections and Gram matrices
    of the shared vectors), so repeated calls (ACDC) skip that work."""
    c = model.cfg
    M = edge_masks.shape[0]
    dense, first, _, own = _setup(model, edge_masks, corrupt, clean, start_layer, embed)
    D = corrupt.shape[-1]
    cache = {} if cache is None else cache
    if "csum" not in cache:
        cache["csum"] = corrupt.cumsum(0)
    csum = cache["csum"]
    if ("shared", first) not in cache:
        cache[("shared", first)] = clean[:first] - corrupt[:first]
    shared = cache[("shared", first)]

    def mix(recv: list[int], n: int, pos: slice = slice(None)) -> Tensor:
        return _mix(dense, csum, shared, own, first, recv, n, pos)

    last_only = slice(-1, None) if not all_positions else slice(None)
    H, E = c.n_heads, c.d_head
    # for each sender computed here: its head's z (so projections can skip d_model), or None
    own_z: list = [None] * len(own)
    for layer in range(start_layer, c.n_layers):
        # the last layer matters only at the last query position (its outputs reach nothing
        # but the logits there): its queries, heads and MLP run on that position alone
        top = layer == c.n_layers - 1
        info, blk = model._layers[layer], model.blocks[layer]
        n = info["n_attn_in"]
        n0 = min(first, n)
        key = ("layer", layer, first)
        if key not in cache:
            W = torch.stack([blk.attn.W_Q, blk.attn.W_K, blk.attn.W_V])  # [3, h, d, e]
            Ws = W * blk.ln1.w[None, None, :, None]
            Wt = [Ws[t].permute(1, 0, 2).reshape(D, -1) for t in range(3)]  # [d, h * e]
            bias = torch.einsum("d,thde->the", blk.ln1.b, W)
            sh = torch.cat([_centred(csum[n - 1])[None], _centred(shared[:n0])])
            # per port: [h, 1 + n0, b, p, e], laid out for a batched product over the heads
            proj_sh = [(sh @ w).unflatten(-1, (H, E)).permute(3, 0, 1, 2, 4).contiguous()
                       for w in Wt]
            g_ss = torch.einsum("sbpd,ubpd->subp", sh, sh)
            cache[key] = (Wt, bias, sh, proj_sh, g_ss)
        Wt, bias, sh, proj_sh, g_ss = cache[key]
        n_own = max(0, n - first)
        if n_own:
            ow = _centred(torch.stack(own[:n_own], 1))  # [m, o, b, p, d]
            g_so = torch.einsum("sbpd,mobpd->msobp", sh, ow)
            g_oo = torch.einsum("mobpd,mqbpd->moqbp", ow, ow)
        qkv = []
        for t, port in enumerate(("q", "k", "v")):
            recv = info[port]
            ps = last_only if (top and port == "q") else slice(None)
            c_sh = torch.cat([dense.new_ones(M, len(recv), 1), dense[:, recv, :n0]], -1)
            var = (torch.einsum("mhs,subp->mhubp", c_sh, g_ss[..., ps])
                   * c_sh[..., None, None]).sum(2)
            psh = proj_sh[t][:, :, :, ps]  # [h, s, b, p', e]
            proj = (c_sh.permute(1, 0, 2) @ psh.flatten(2)).unflatten(-1, psh.shape[2:])
            proj = proj.transpose(0, 1)  # [m, h, b, p', e]
            if n_own:
                c_ow = dense[:, recv, first:n]
                var = var + 2 * (torch.einsum("mhs,msobp->mhobp", c_sh, g_so[..., ps])
                                 * c_ow[..., None, None]).sum(2)
                var = var + (torch.einsum("mho,moqbp->mhqbp", c_ow, g_oo[..., ps])
                             * c_ow[..., None, None]).sum(2)
                for o in range(n_own):
                    po = _own_projection(model, cache, own[o], own_z[o], o + first, layer, t,
                                         ps, Wt[t], corrupt)
                    proj = proj + c_ow[:, :, o, None, None, None] * po
            inv = (var / D + 1e-5).rsqrt()
            qkv.append(proj * inv[..., None] + bias[t][None, :, None, None, :])
        out, z = _heads_from_qkv(model, *qkv, blk.attn)
        own_z += [(z[:, h], layer, h) for h in range(H)]
        heads_c = corrupt[info["heads"]][:, :, last_only if top else slice(None)]
        own += list(out.transpose(0, 1) - heads_c.unsqueeze(1))
        if c.d_mlp:
            pos = last_only if top else slice(None)
            x = mix([info["mlp_recv"]], info["n_mlp_in"], pos)[:, 0]
            own.append(model._mlp(x, blk) - corrupt[info["mlp"]][:, pos])
            own_z.append(None)
    x = mix([model._logits_recv], model.n_senders,
            slice(None) if all_positions else slice(-1, None))[:, 0]
    x = x if all_positions else x[:, :, 0]
    return layer_norm(x, model.ln_final) @ model.unembed.W_U + model.unembed.b_U


def _own_projection(model, cache: dict, diff: Tensor, zi, s: int, layer: int, t: int,
                    ps: slice, Wt: Tensor, corrupt: Tensor) -> Tensor:
    """centred(out_s - C_s) diag(w) W_t for sender s computed in this run, as [m, h, b, p', e].

    For a head sender (zi = (z, its layer, its head)) the output is z W_O, so the projection
    is z (W_O~ diag(w) W_t) minus the (cached) projection of its centred corrupted output,
    with W_O~ = W_O centred along d_model: a d_head-sized product instead of a d_model one."""
    H, E = model.cfg.n_heads, model.cfg.d_head
    if zi is None:
        x = _centred(diff[:, :, ps]) @ Wt
    else:
        z, src_layer, src_head = zi
        key = ("own", s, layer, t)
        if key not in cache:
            wo = model.blocks[src_layer].attn.W_O[src_head]
            cache[key] = ((wo - wo.mean(-1, keepdim=True)) @ Wt,
                          _centred(corrupt[s]) @ Wt)  # [e', h * e], [b, p, h * e]
        mo, pc = cache[key]
        x = z[:, :, ps] @ mo - pc[:, ps]
    return x.unflatten(-1, (H, E)).permute(0, 3, 1, 2, 4)


def _heads_from_qkv(model, q: Tensor, k: Tensor, v: Tensor, p) -> tuple[Tensor, Tensor]:
    """Per-head outputs [m, h, b, p, d] and z [m, h, b, p, e] from projected queries, keys
    and values."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(model.cfg.d_head)
    nq, n = scores.shape[-2:]  # the queries are the last nq positions
    causal = torch.ones(nq, n, dtype=torch.bool, device=scores.device).triu(n - nq + 1)
    z = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
    return torch.einsum("...hbpe,hed->...hbpd", z, p.W_O), z
