"""Sparse kernels for the top-k family: after selection, every step touches only the k winners.

A top-k SAE keeps k of d_sae pre-activations per row. Selection needs the dense encoder matmul,
but nothing after it does. A selected code is a `SparseCode`: COO sorted by row (`rows`, `cols`
= latent ids, per-row `offsets`), with its transpose (latent -> rows) made once on demand and
shared by every backward that needs it.

- `select_topk_exact`: the selecting matmul in full precision into a reused buffer, then an
  exact grouped top-k (`grouped_topk_indices`: a max over strided groups and two small top-ks
  instead of one over all d_sae columns) and the winners' values read back.
- `select_topk_lowp`: where bf16 is native (AMX/AVX512-BF16 CPUs, GPUs: ~8x the fp32 peak), the
  selecting matmul in bf16 in row chunks that stay in cache, then the winners' exact fp32 values
  recomputed (an SDDMM). Only which latents win is low precision, and only at near-ties.
- `SampledLinear`: (x, W, b) -> the selected pre-activations; backward is two `embedding_bag`s
  (rows -> latents for dx; the transposed code for dW) and an `index_add` for db.
- `SparseDecode`: (acts, W_dec) -> acts @ W_dec; backward is an SDDMM for d acts and an
  `embedding_bag` over the transposed code for dW_dec (no dense [batch, d_sae] tensor anywhere);
  `SparseDecodeMSE` fuses it with the reconstruction loss (fewer passes over [batch, d]).

Devices: everything is plain PyTorch and allocates on its inputs' device. On the CPU a value
read back costs nothing, so the kernels take data-dependent shortcuts there (counts by
`bincount`, a sparse path chosen by the code's density, a matmul over the dead latents only);
on an accelerator such a read would stall the device every step, so `sync_free(device)` picks
paths whose shapes are known in advance (offsets by `searchsorted`, masked top-ks). The SDDMM
uses the sparse CSR kernel where torch has one (CPU, CUDA) and a chunked gather elsewhere (MPS,
and the meta device used to check allocations). `sync_free_paths()` forces the accelerator
paths on the CPU, so they are tested against the same naive reference.

Everything is tested against the dense computation (tests/test_sae_kernels.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


_FORCE_SYNC_FREE = contextvars.ContextVar("sync_free", default=False)
#: devices with a sparse CSR SDDMM (`torch.sparse.sampled_addmm`)
_CSR_SDDMM_DEVICES = ("cpu", "cuda")


def sync_free(device: torch.device) -> bool:
    """Whether a step on `device` must avoid reading device values on the host (every device
    but the CPU, or any device inside `sync_free_paths()`)."""
    return device.type != "cpu" or _FORCE_SYNC_FREE.get()


@contextlib.contextmanager
def sync_free_paths() -> Iterator[None]:
    """Run the accelerator (host-sync-free) paths on any device, the CPU included."""
    token = _FORCE_SYNC_FREE.set(True)
    try:
        yield
    finally:
        _FORCE_SYNC_FREE.reset(token)


def row_offsets(rows: Int[Tensor, " nnz"], n_rows: int) -> Int[Tensor, " n_rows"]:
    """Start of each row's entries in a row-sorted COO list (empty rows allowed)."""
    if sync_free(rows.device):  # bincount sizes its output from the data: a host read
        return torch.searchsorted(rows, torch.arange(n_rows, device=rows.device,
                                                     dtype=rows.dtype))
    counts = torch.bincount(rows, minlength=n_rows)
    return counts.cumsum(0) - counts


def reused(work: dict[str, Tensor] | None, name: str, shape: tuple[int, ...], like: Tensor,
           dtype: torch.dtype | None = None) -> Tensor | None:
    """The tensor `work[name]` if it has this shape and dtype and is on `like`'s device (made
    and kept if not): an output buffer a training step reuses instead of a fresh 10-100 MB
    tensor (and its page faults) every step. None without a workspace (a fresh output)."""
    if work is None:
        return None
    dtype = dtype or like.dtype
    buf = work.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != like.device:
        buf = work[name] = torch.empty(shape, dtype=dtype, device=like.device)
    return buf


class SparseCode:
    """The pattern of a row-sorted COO matrix [n_rows, n_cols], and its transpose on demand."""

    def __init__(self, rows: Tensor, cols: Tensor, offsets: Tensor, n_cols: int):
        self.rows, self.cols, self.offsets, self.n_cols = rows, cols, offsets, n_cols
        self.n_rows = offsets.shape[0]
        self._t: tuple[Tensor, Tensor, Tensor] | None = None
        self._crow: Tensor | None = None

    @classmethod
    def from_offsets(cls, cols: Tensor, offsets: Tensor, n_cols: int) -> SparseCode:
        counts = torch.diff(offsets, append=offsets.new_tensor([cols.shape[0]]))
        rows = torch.repeat_interleave(torch.arange(offsets.shape[0], device=cols.device), counts,
                                       output_size=cols.shape[0])
        return cls(rows, cols, offsets, n_cols)

    def transposed(self) -> tuple[Tensor, Tensor, Tensor]:
        """(order, rows[order], per-column offsets): entries sorted by column."""
        if self._t is None:
            # int32 sorts and indexes faster than int64 on CPU (embedding_bag takes either), and
            # int16 keys sort twice as fast again where the column ids fit
            small = max(self.n_cols, self.n_rows, self.cols.shape[0]) < 2**31
            key = (self.cols.to(torch.int16) if self.n_cols <= 2**15 else
                   self.cols.to(torch.int32) if small else self.cols)
            sorted_key, order = torch.sort(key, stable=True)
            rows_t = self.rows.index_select(0, order)
            if sync_free(self.cols.device):
                col_offsets = torch.searchsorted(sorted_key, torch.arange(
                    self.n_cols, device=key.device, dtype=key.dtype))
            else:
                col_offsets = row_offsets(self.cols, self.n_cols)
            if small:
                rows_t, col_offsets = rows_t.to(torch.int32), col_offsets.to(torch.int32)
            self._t = (order, rows_t, col_offsets)
        return self._t

    def sddmm(self, a: Float[Tensor, "n_rows d"], b: Float[Tensor, "n_cols d"],
              bias: Tensor | None = None) -> Float[Tensor, " nnz"]:
        """a[rows[n]] . b[cols[n]] (+ bias[cols[n]]) for every entry, without a dense product."""
        if a.device.type not in _CSR_SDDMM_DEVICES:
            return self._gathered_sddmm(a, b, bias)
        if self._crow is None:
            self._crow = torch.cat([self.offsets, self.offsets.new_tensor([self.cols.shape[0]])])
        base = bias[self.cols] if bias is not None else a.new_zeros(self.cols.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            pattern = torch.sparse_csr_tensor(self._crow, self.cols, base.to(a.dtype),
                                              (self.n_rows, self.n_cols), check_invariants=False)
            return torch.sparse.sampled_addmm(pattern, a, b.T).values()

    def _gathered_sddmm(self, a: Tensor, b: Tensor, bias: Tensor | None,
                        chunk: int = 1 << 16) -> Tensor:
        """The SDDMM by gathering both rows of each entry (in chunks of entries, bounding the
        [chunk, d] temporaries), for devices without a sparse CSR kernel."""
        out = a.new_empty(self.cols.shape[0])
        for s in range(0, self.cols.shape[0], chunk):
            r, c = self.rows[s:s + chunk], self.cols[s:s + chunk]
            out[s:s + chunk] = torch.linalg.vecdot(a.index_select(0, r), b.index_select(0, c))
        if bias is not None:
            out += bias[self.cols].to(out.dtype)
        return out


class SampledLinear(torch.autograd.Function):
    """vals[n] = (x[rows[n]] - shift) . weight[cols[n]] + bias[cols[n]], with a sparse backward.

    The forward takes the values already computed by the selection (`values`), so it costs
    nothing; the backward never forms a dense [batch, d_sae] gradient. `x` is the input with the
    shift already subtracted (an SAE's x - b_dec); the shift's gradient, -(db @ weight), comes
    from the bias gradient for free, so x need not require grad (if it does, dx is an
    `embedding_bag` over the code). `shift` may be None.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, shift, code: SparseCode, values):
        ctx.save_for_backward(x, weight)
        ctx.code = code
        return values

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        code: SparseCode = ctx.code
        grad = grad.to(x.dtype).contiguous()
        gx = gw = gb = gs = None
        if ctx.needs_input_grad[0]:
            gx = F.embedding_bag(code.cols, weight, code.offsets, mode="sum",
                                 per_sample_weights=grad)
        if ctx.needs_input_grad[1]:
            order, rows_t, col_offsets = code.transposed()
            gw = F.embedding_bag(rows_t, x, col_offsets, mode="sum",
                                 per_sample_weights=grad[order])
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            gb = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device)
            gb.index_add_(0, code.cols, grad)
            if ctx.needs_input_grad[3]:
                gs = -(gb @ weight)
        return gx, gw, gb, gs, None, None


class SparseDecode(torch.autograd.Function):
    """y[r] = sum over row r's entries of vals[n] * W[cols[n]]; backward an SDDMM for d vals and
    an `embedding_bag` over the transposed code for dW."""

    @staticmethod
    def forward(ctx, vals, weight, code: SparseCode):
        ctx.save_for_backward(vals, weight)
        ctx.code = code
        return F.embedding_bag(code.cols, weight, code.offsets, mode="sum",
                               per_sample_weights=vals)

    @staticmethod
    def backward(ctx, grad):
        vals, weight = ctx.saved_tensors
        code: SparseCode = ctx.code
        grad = grad.contiguous()
        gv = gw = None
        if ctx.needs_input_grad[0]:
            gv = code.sddmm(grad, weight)
        if ctx.needs_input_grad[1]:
            order, rows_t, col_offsets = code.transposed()
            gw = F.embedding_bag(rows_t, grad, col_offsets, mode="sum",
                                 per_sample_weights=vals[order].to(grad.dtype))
        return gv, gw, None


class SparseDecodeMSE(torch.autograd.Function):
    """The reconstruction loss of a sparse code in one piece, fewest passes over [batch, d]:

        recon = SparseDecode(vals, weight) + bias,  err = target - recon,
        loss  = sum(err^2) / batch                  (summed over d, mean over rows)

    Returns (loss, recon, err); only the loss is differentiable. The backward forms
    d recon = -2 err / batch once and feeds the decoder's sparse backward with it.
    """

    @staticmethod
    def forward(ctx, vals, weight, bias, target, code: SparseCode):
        recon = F.embedding_bag(code.cols, weight, code.offsets, mode="sum",
                                per_sample_weights=vals)
        recon.add_(bias)
        err = torch.sub(target, recon)
        loss = torch.linalg.vector_norm(err).square() / target.shape[0]
        ctx.save_for_backward(vals, weight, err)
        ctx.code = code
        ctx.mark_non_differentiable(recon, err)
        return loss, recon, err

    @staticmethod
    def backward(ctx, g_loss, _g_recon, _g_err):
        vals, weight, err = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = torch.mul(err, g_loss * (-2.0 / err.shape[0]))  # d loss / d recon
        gv = gw = gb = gt = None
        if ctx.needs_input_grad[0]:
            gv = code.sddmm(g, weight)
        if ctx.needs_input_grad[1]:
            order, rows_t, col_offsets = code.transposed()
            gw = F.embedding_bag(rows_t, g, col_offsets, mode="sum",
                                 per_sample_weights=vals[order].to(g.dtype))
        if ctx.needs_input_grad[2]:
            gb = g.sum(0)
        if ctx.needs_input_grad[3]:
            gt = -g
        return gv, gw, gb, gt, None


def sparse_decode(cols: Int[Tensor, " nnz"], offsets: Int[Tensor, " batch"],
                  vals: Float[Tensor, " nnz"], W_dec: Float[Tensor, "d_sae d_out"],
                  b_dec: Float[Tensor, " d_out"], code: SparseCode | None = None
                  ) -> Float[Tensor, "batch d_out"]:
    """sum_n vals[n] * W_dec[cols[n]] per row, plus b_dec (sparse backward)."""
    if code is None:
        code = SparseCode.from_offsets(cols, offsets, W_dec.shape[0])
    return SparseDecode.apply(vals, W_dec, code) + b_dec


# --------------------------------------------------------------------------- selection
def select_topk(pre: Float[Tensor, "batch d_sae"], k: int):
    """COO of the k largest entries per row: (rows, cols, values, offsets)."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    b = pre.shape[0]
    rows = torch.arange(b, device=pre.device).repeat_interleave(k)
    offsets = torch.arange(0, b * k, k, device=pre.device)
    return rows, idx.reshape(-1), vals.reshape(-1), offsets


def _group_size(d: int, k: int) -> int:
    """Size s of the strided groups for `grouped_topk_indices`: d = s * G with G >= k groups,
    s near sqrt(d / k) (minimises the G + s*k entries the two small top-ks scan); 1 if none."""
    best = 1
    for s in range(2, d // k + 1):
        if d % s == 0 and abs(math.log(s / math.sqrt(d / k))) < abs(math.log(best / math.sqrt(d / k))):
            best = s
    return best


def grouped_topk_indices(pre: Float[Tensor, "rows d"], k: int) -> Int[Tensor, "rows k"]:
    """Column indices of the k largest entries per row, exactly (ties broken arbitrarily).

    The columns are split into G strided groups (column c is in group c % G). The top k of a
    row lie in the k groups with the largest maxima: an entry in any other group is beaten by
    those k maxima. So one cheap max over groups, a top-k over G group maxima and a top-k over
    the k*s candidates replace a top-k over all d columns.
    """
    r, d = pre.shape
    s = _group_size(d, k)
    if s == 1:
        return pre.topk(k, dim=-1, sorted=False).indices
    g = d // s
    grouped = pre.view(r, s, g)
    gidx = grouped.amax(dim=1).topk(k, dim=-1, sorted=False).indices  # [r, k] group ids
    cand = grouped.gather(2, gidx.unsqueeze(1).expand(r, s, k))  # [r, s, k]
    j = cand.view(r, s * k).topk(k, dim=-1, sorted=False).indices
    return torch.div(j, k, rounding_mode="floor") * g + gidx.gather(1, j % k)


@torch.no_grad()
def select_topk_lowp(x: Float[Tensor, "batch d_in"], weight: Float[Tensor, "d_sae d_in"],
                     bias: Float[Tensor, " d_sae"], k: int, chunk: int = 256,
                     dtype: torch.dtype = torch.bfloat16) -> tuple[SparseCode, Tensor]:
    """Top-k code of x @ weight.T + bias: selected in `dtype`, values exact in x's dtype.

    Rows go through in chunks, so the low-precision pre-activations of a chunk stay in cache
    and no [batch, d_sae] tensor is ever made. Returns (code, exact values [batch*k]).
    """
    b, d = x.shape[0], weight.shape[0]
    if x.device.type != "cpu":  # the chunks are for a CPU's caches; a GPU wants one big matmul
        chunk = b
    xl, wl, bl = x.to(dtype), weight.to(dtype).T, bias.to(dtype)
    idx = torch.empty(b, k, dtype=torch.long, device=x.device)
    buf = torch.empty(min(chunk, b), d, dtype=dtype, device=x.device)
    for s in range(0, b, chunk):
        e = min(b, s + chunk)
        pre = torch.addmm(bl, xl[s:e], wl, out=buf[: e - s])
        idx[s:e] = grouped_topk_indices(pre, k)
    rows = torch.arange(b, device=x.device).repeat_interleave(k)
    offsets = torch.arange(0, b * k, k, device=x.device)
    code = SparseCode(rows, idx.view(-1), offsets, d)
    return code, code.sddmm(x, weight, bias)


@torch.no_grad()
def select_topk_exact(x: Float[Tensor, "batch d_in"], weight: Float[Tensor, "d_sae d_in"],
                      bias: Float[Tensor, " d_sae"], k: int, out: Tensor | None = None
                      ) -> tuple[SparseCode, Tensor]:
    """Top-k code of x @ weight.T + bias in full precision: one matmul into `out` (a reused
    [batch, d_sae] buffer spares the page faults of a fresh 75-150 MB tensor every step), a
    grouped top-k, and the winners' values read back from the buffer."""
    b, d = x.shape[0], weight.shape[0]
    pre = torch.addmm(bias, x, weight.T, out=out)
    idx = grouped_topk_indices(pre, k)
    vals = pre.gather(1, idx).view(-1)
    rows = torch.arange(b, device=x.device).repeat_interleave(k)
    offsets = torch.arange(0, b * k, k, device=x.device)
    return SparseCode(rows, idx.view(-1), offsets, d), vals


def native_lowp_dtype(device: torch.device) -> torch.dtype | None:
    """The low precision `device` multiplies natively, or None (`interp.devices`): bf16 on
    Ampere+ GPUs (bf16 tensor cores) and AMX / AVX512-BF16 CPUs, fp16 on Volta/Turing GPUs."""
    from interp.devices import native_lowp_dtype as native

    return native(device)


def select_batch_topk(pre: Float[Tensor, "batch d_sae"], k: int):
    """COO of the k * batch largest entries of the whole batch, sorted by row."""
    b, d = pre.shape
    vals, flat = pre.reshape(-1).topk(k * b, sorted=False)
    flat, order = flat.sort()
    vals = vals[order]
    rows, cols = flat // d, flat % d
    return rows, cols, vals, row_offsets(rows, b)


def select_dead_topk(pre: Float[Tensor, "batch d_sae"], dead: Tensor, k: int):
    """COO of the k largest pre-activations among dead latents per row (for AuxK). With fewer
    than k dead latents, the rest of each row's entries have value -inf (a ReLU makes them 0)."""
    masked = pre.masked_fill(~dead, float("-inf"))
    return select_topk(masked, min(k, pre.shape[1]))
