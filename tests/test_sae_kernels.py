"""The sparse top-k kernels against the plain dense computation (values and gradients)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from saes.architectures import create_sae
from saes.base import SAEConfig
from saes.kernels import (SampledLinear, SparseCode, SparseDecode, SparseDecodeMSE, _group_size,
                          grouped_topk_indices, select_topk_lowp, sparse_decode)


def _sets(idx):
    return [set(r) for r in idx.tolist()]


@pytest.mark.parametrize("d,k", [(4608, 32), (9216, 32), (256, 8), (97, 5), (64, 64)])
def test_grouped_topk_is_exact(d, k):
    pre = torch.randn(300, d, generator=torch.Generator().manual_seed(d))
    got = grouped_topk_indices(pre, k)
    assert got.shape == (300, k)
    assert _sets(got) == _sets(pre.topk(k, dim=-1).indices)


def test_grouped_topk_finds_winners_clustered_in_one_group():
    d, k = 512, 8
    assert _group_size(d, k) == 8  # 64 strided groups: column c is in group c % 64
    pre = torch.randn(4, d, generator=torch.Generator().manual_seed(1))
    pre[:, torch.arange(k) * 64] = 100 + torch.arange(k, dtype=torch.float32)  # all in group 0
    assert _sets(grouped_topk_indices(pre, k)) == _sets(pre.topk(k, dim=-1).indices)


def _sae_tensors(b=64, d_in=24, d_sae=384, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d_in, generator=g)
    w = torch.randn(d_sae, d_in, generator=g) / d_in ** 0.5
    bias = torch.randn(d_sae, generator=g) * 0.1
    return x, w, bias


def test_lowp_selection_exact_in_fp32_and_near_exact_in_bf16():
    x, w, bias = _sae_tensors(b=300)
    k = 16
    pre = F.linear(x, w, bias)
    code, vals = select_topk_lowp(x, w, bias, k, chunk=128, dtype=torch.float32)
    assert _sets(code.cols.view(-1, k)) == _sets(pre.topk(k, dim=-1).indices)
    torch.testing.assert_close(vals, pre.gather(1, code.cols.view(-1, k)).view(-1))
    code, vals = select_topk_lowp(x, w, bias, k, chunk=128, dtype=torch.bfloat16)
    # values are exact fp32 at the chosen columns; a swap only happens at near-ties
    torch.testing.assert_close(vals, pre.gather(1, code.cols.view(-1, k)).view(-1))
    kth = pre.topk(k, dim=-1).values[:, -1:]
    assert (vals.view(-1, k) >= kth - 0.02 * pre.abs().amax(-1, keepdim=True)).all()
    overlap = sum(len(a & b) for a, b in zip(_sets(code.cols.view(-1, k)),
                                              _sets(pre.topk(k, dim=-1).indices)))
    assert overlap >= 0.97 * 300 * k
    assert (code.rows == torch.arange(300).repeat_interleave(k)).all()


def test_sddmm_matches_dense():
    x, w, bias = _sae_tensors()
    cols = torch.randint(0, w.shape[0], (x.shape[0], 5), generator=torch.Generator().manual_seed(2))
    code = SparseCode.from_offsets(cols.view(-1), torch.arange(0, x.shape[0] * 5, 5), w.shape[0])
    ref = F.linear(x, w, bias).gather(1, cols).view(-1)
    torch.testing.assert_close(code.sddmm(x, w, bias), ref)


def _dense_reference(x, w_enc, b_enc, w_dec, b_dec, idx):
    """Top-k SAE loss through dense tensors, for a given selection idx [batch, k]."""
    x_c = x - b_dec
    pre = F.linear(x_c, w_enc, b_enc)
    z = torch.zeros_like(pre).scatter(1, idx, F.relu(pre.gather(1, idx)))
    recon = z @ w_dec + b_dec
    return (x - recon).pow(2).sum(-1).mean()


def _leaves(*ts):
    return [t.detach().clone().requires_grad_(True) for t in ts]


def test_sampled_linear_and_sparse_decode_gradients_match_dense():
    x, w, bias = _sae_tensors()
    g = torch.Generator().manual_seed(3)
    w_dec, b_dec = torch.randn(w.shape, generator=g), torch.randn(x.shape[1], generator=g)
    k = 8
    code, vals = select_topk_lowp(x - b_dec, w, bias, k, dtype=torch.bfloat16)
    idx = code.cols.view(-1, k)

    ref_in = _leaves(x, w, bias, w_dec, b_dec)
    ref = _dense_reference(*ref_in, idx)
    ref.backward()

    # x - b_dec as a differentiable input (dx by embedding_bag) ...
    xs, ws, bs, wds, bds = _leaves(x, w, bias, w_dec, b_dec)
    acts = F.relu(SampledLinear.apply(xs - bds, ws, bs, None, code, vals))
    recon = SparseDecode.apply(acts, wds, code) + bds
    loss = (xs - recon).pow(2).sum(-1).mean()
    loss.backward()
    torch.testing.assert_close(loss, ref)
    for a, b in zip((xs, ws, bs, wds, bds), ref_in):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)
    # ... and as a constant input with b_dec as the kernel's shift (its gradient from db)
    ws, bs, wds, bds = _leaves(w, bias, w_dec, b_dec)
    acts = F.relu(SampledLinear.apply((x - b_dec), ws, bs, bds, code, vals))
    recon = SparseDecode.apply(acts, wds, code) + bds
    (x - recon).pow(2).sum(-1).mean().backward()
    for a, b in zip((ws, bs, wds, bds), ref_in[1:]):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_sparse_decode_without_a_code_matches_dense():
    g = torch.Generator().manual_seed(4)
    w_dec, b_dec = torch.randn(50, 7, generator=g), torch.randn(7, generator=g)
    rows = torch.tensor([0, 0, 0, 2, 2, 3])  # row 1 empty, uneven rows
    cols = torch.tensor([4, 9, 4, 0, 49, 7])
    vals = torch.randn(6, generator=g)
    offsets = torch.tensor([0, 3, 3, 5])
    dense = torch.zeros(4, 50).index_put((rows, cols), vals, accumulate=True)
    (wd, bd, v), (wd2, bd2, v2) = _leaves(w_dec, b_dec, vals), _leaves(w_dec, b_dec, vals)
    out = sparse_decode(cols, offsets, v, wd, bd)
    ref = torch.zeros(4, 50).index_put((rows, cols), v2, accumulate=True) @ wd2 + bd2
    torch.testing.assert_close(out, dense @ w_dec + b_dec)
    t = torch.randn(4, 7, generator=g)
    (out * t).sum().backward()
    (ref * t).sum().backward()
    for a, b in ((wd, wd2), (bd, bd2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("paths", ["cpu", "sync-free"])
@pytest.mark.parametrize("with_dead", [False, True])
def test_topk_training_loss_matches_dense_reference(with_dead, paths):
    """The top-k step (sparse kernels, AuxK) against the dense computation, on the CPU's paths
    and on the accelerator's (no host reads: searchsorted offsets, a masked AuxK)."""
    from saes.kernels import sync_free_paths

    with sync_free_paths() if paths == "sync-free" else contextlib.nullcontext():
        _check_topk_against_dense_reference(with_dead)


def _check_topk_against_dense_reference(with_dead):
    cfg = SAEConfig(architecture="topk", d_in=24, d_sae=384, k=8, aux_k=16)
    sae = create_sae(cfg, seed=0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        sae.b_dec.normal_(0, 0.1, generator=g)
    x = torch.randn(96, 24, generator=g)
    dead = torch.zeros(384, dtype=torch.bool)
    if with_dead:
        dead[::3] = True
    out = sae.training_loss(x, x, dead=dead if with_dead else None)
    out.loss.backward()
    # the reference: same selection (the exact fp32 values at bf16-chosen columns), dense math
    with torch.no_grad():
        code, _ = sae._select(x - sae.b_dec)
    idx = code.cols.view(-1, 8)
    ref_in = _leaves(sae.enc_weight, sae.b_enc, sae.W_dec, sae.b_dec)
    we, be, wd, bd = ref_in
    ref = _dense_reference(x, we, be, wd, bd, idx)
    if with_dead:
        x_c = x - bd
        pre = F.linear(x_c, we, be)
        masked = pre.detach().masked_fill(~dead, float("-inf"))
        aidx = masked.topk(16, dim=-1).indices
        za = torch.zeros_like(pre).scatter(1, aidx, F.relu(pre.gather(1, aidx)))
        with torch.no_grad():
            z = torch.zeros_like(pre).scatter(1, idx, F.relu(pre.gather(1, idx)))
            e = x - (z @ wd + bd)
        aux = (e - za @ wd).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean()
        ref = ref + cfg.aux_coefficient * aux
    ref.backward()
    torch.testing.assert_close(out.loss, ref)
    for p, r in zip((sae.enc_weight, sae.b_enc, sae.W_dec, sae.b_dec), ref_in):
        torch.testing.assert_close(p.grad, r.grad, atol=1e-5, rtol=1e-4)
    assert float(out.l0) <= 8


def test_topk_fp32_selection_equals_exact_topk():
    cfg = SAEConfig(architecture="topk", d_in=24, d_sae=384, k=8)
    sae = create_sae(cfg, seed=0)
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(6))
    sae.select_dtype = None
    code, vals = sae._select(x - sae.b_dec)
    pre = F.linear(x - sae.b_dec, sae.enc_weight, sae.b_enc)
    assert _sets(code.cols.view(-1, 8)) == _sets(pre.topk(8, dim=-1).indices)


def test_fused_decode_mse_matches_autograd():
    g = torch.Generator().manual_seed(7)
    w_dec, b_dec = torch.randn(40, 6, generator=g), torch.randn(6, generator=g)
    target = torch.randn(5, 6, generator=g)
    cols = torch.randint(0, 40, (15,), generator=g)
    code = SparseCode.from_offsets(cols, torch.arange(0, 15, 3), 40)
    vals = torch.rand(15, generator=g)
    a = _leaves(vals, w_dec, b_dec, target)
    b = _leaves(vals, w_dec, b_dec, target)
    loss, recon, err = SparseDecodeMSE.apply(*a, code)
    ref_recon = SparseDecode.apply(b[0], b[1], code) + b[2]
    ref = (b[3] - ref_recon).pow(2).sum(-1).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(recon, ref_recon.detach())
    torch.testing.assert_close(err, (b[3] - ref_recon).detach())
    (3 * loss).backward()
    (3 * ref).backward()
    for u, v in zip(a, b):
        torch.testing.assert_close(u.grad, v.grad)
