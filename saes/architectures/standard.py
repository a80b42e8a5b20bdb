"""Standard ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic's "April update").

ReLU sparse autoencoders with an L1 penalty: Cunningham et al., "Sparse Autoencoders Find Highly
Interpretable Features in Language Models" (arXiv 2309.08600) and Bricken et al. 2023. The
penalty follows Anthropic's "Circuits Updates - April 2024" (transformer-circuits.pub): each
activation is weighted by the norm of its decoder row, and the decoder is left unconstrained,
so the model cannot shrink the penalty by shrinking f and growing W_dec (SAELens's
`StandardTrainingSAE` does the same):

    f    = ReLU(pre),  pre = (x - b_dec) @ W_enc + b_enc        [batch, d_sae]
    loss = ||y - (f @ W_dec + b_dec)||^2 + lambda * sum_j f_j ||W_dec_j||   (mean over rows)

The April update also drops the b_dec subtraction before the encoder; keeping it (as SAELens
does) only reparameterises b_enc. Transcoders and skip-transcoders are exported as SAELens
"transcoder" / "skip_transcoder" (the base class maps the name).

Training goes through `StandardStep`, one autograd function for the whole loss with a
hand-written backward: the penalty is sum_j n_j * (column sum of f)_j (no [batch, d_sae]
product), ReLU and masking are done in place (ReLU's own backward kernel), the [batch, d_sae]
buffers are reused from step to step, and once the code is sparse (density below
`SPARSE_DENSITY`) the decode and every gradient after the encoder's forward matmul go through
the active entries only (the top-k family's kernels: `embedding_bag`s, and an SDDMM or, for a
moderately sparse code, one dense matmul read at the active entries). With bf16 (`matmul_dtype`)
every [batch, d_sae]-sized operation runs in bf16: the matmuls, the code, the gathers. All paths
compute the same gradients as autograd on the formula above (tests/test_sae_architectures.py).
On an accelerator (`saes.kernels.sync_free`) the step is always dense: choosing the sparse path
would read the code's density back to the host every step, and a GPU's dense (bf16) matmuls
are fast; the L0 stays a device tensor.

SAELens's trainer clips the gradient norm at 1.0, and its standard SAE's sparsity depends on it
(`TrainConfig.max_grad_norm`; see saes/train.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from saes.base import LossOutput, SparseDictionary
from saes.kernels import SparseCode, reused, row_offsets, sync_free

INIT_DECODER_NORM = 0.1
#: at or below this fraction of active entries the step runs on the sparse code. Measured
#: crossovers (d_sae 4608, batch 4096, one thread, fwd+bwd): full precision ~0.18 (dense 1.3 s),
#: bf16 ~0.11 (dense 0.63 s; sparse 0.60 s at 0.1, 0.38 s at 0.05, 0.25 s at 0.015)
SPARSE_DENSITY = 0.15
SPARSE_DENSITY_LOWP = 0.1
#: on the sparse path, below this density the code's gradient is an SDDMM; above it, one dense
#: matmul read at the active entries is cheaper (the SDDMM has no bf16 kernel on CPU).
#: Measured crossovers: full precision ~0.12, bf16 ~0.065
SDDMM_DENSITY = 0.1
SDDMM_DENSITY_LOWP = 0.06


class StandardStep(torch.autograd.Function):
    """loss = ||y - (ReLU((x - s) W_enc^T + b_enc) W_dec + b_dec)||^2 / B + lam * sum_j n_j c_j / B

    with n_j = ||W_dec_j||, c_j the column sums of f, s = b_dec if `shift` else 0. Returns
    (loss, recon, mse, l1, fired [d_sae], l0); only the loss is differentiable.

    `lowp` (bf16) is the dtype of every [batch, d_sae]-sized operation: the matmuls (fp32
    accumulation), the code itself and the sparse gathers; weights, biases, the error and the
    loss stay in the input's dtype. `work`, a dict the caller keeps, holds the [batch, d_sae]
    buffers from one step to the next (a fresh 40-80 MB tensor costs its page faults every
    step). A buffer saved for the backward is overwritten only by the next forward; autograd's
    version check catches a second forward before the first one's backward."""

    @staticmethod
    def forward(ctx, x, target, enc_weight, b_enc, W_dec, b_dec, lam: float, shift: bool,
                sparse_density: float, lowp: torch.dtype | None = None,
                sddmm_density: float = 1.0, work: dict | None = None):
        b, d = x.shape[0], W_dec.shape[0]
        cdt = lowp or x.dtype
        x_c = x - b_dec if shift else x
        xl, Wd = x_c.to(cdt), W_dec.to(cdt)
        acts = torch.addmm(b_enc.to(cdt), xl, enc_weight.to(cdt).T,
                           out=reused(work, "acts", (b, d), x, cdt))
        # ReLU as threshold (x if x > 0 else +0: relu_ keeps -0.0), so that the code's bits,
        # read as signed integers, are > 0 exactly where f > 0 and 0 elsewhere: counting and
        # finding the nonzeros on the integer view is branch-free (~15x faster than on floats)
        F.threshold_(acts, 0.0, 0.0)
        bits = acts.view(_INT_OF[cdt])
        norms = torch.linalg.vector_norm(W_dec, dim=1)
        nnz = torch.count_nonzero(bits)
        if sync_free(x.device):
            sparse_density = -1.0  # dense: no host read of the density
        else:
            nnz = int(nnz)
        flat = code = vals = None
        if sparse_density >= 0 and nnz <= sparse_density * acts.numel():
            flat = bits.view(-1).nonzero().squeeze(1)
            rows = torch.div(flat, d, rounding_mode="floor")
            cols = flat - rows * d
            vals = acts.view(-1).index_select(0, flat)
            colsum = torch.zeros_like(norms).index_add_(0, cols, vals.to(x.dtype))
            code = SparseCode(rows, cols, row_offsets(rows, b), d)
            recon = b_dec + F.embedding_bag(cols, Wd, code.offsets, mode="sum",
                                            per_sample_weights=vals)
            if nnz > sddmm_density * acts.numel():
                acts = None  # the backward reads a dense product at `flat`
            else:
                acts = flat = None
        else:
            colsum = _colsum(acts, x.dtype)
            recon = b_dec + torch.mm(acts, Wd)
        err = torch.sub(target, recon)
        mse = torch.linalg.vector_norm(err).square() / b
        l1 = colsum @ norms / b
        loss = mse + lam * l1
        mse, l1 = mse.clone(), l1.clone()  # outputs of their own (loss must not alias them)
        ctx.save_for_backward(xl, enc_weight, W_dec, Wd, norms, err, colsum, acts, vals, flat)
        ctx.code, ctx.lam, ctx.shift, ctx.work = code, lam, shift, work
        l0 = nnz / b  # a device tensor on the sync-free path
        ctx.mark_non_differentiable(recon, mse, l1, *([l0] if isinstance(l0, Tensor) else []))
        return loss, recon, mse, l1, colsum > 0, l0

    @staticmethod
    def backward(ctx, g, *_):
        xl, enc_weight, W_dec, Wd, norms, err, colsum, acts, vals, flat = ctx.saved_tensors
        code: SparseCode | None = ctx.code
        b, d = xl.shape[0], W_dec.shape[0]
        cdt, dt = xl.dtype, W_dec.dtype
        g_recon = torch.mul(err, g * (-2.0 / b))
        gl = g_recon.to(cdt)
        c = g * ctx.lam / b  # d loss / d f_bj = c * n_j on top of the reconstruction's
        if code is not None:
            if flat is None:
                g_vals = code.sddmm(g_recon, W_dec)
            else:
                g_pre = torch.mm(gl, Wd.T, out=reused(ctx.work, "g_pre", (b, d), gl, cdt))
                g_vals = g_pre.view(-1).index_select(0, flat).to(dt)
            g_vals.add_(norms.index_select(0, code.cols), alpha=float(c))
            order, rows_t, col_offsets = code.transposed()
            gW_dec = F.embedding_bag(rows_t, gl, col_offsets, mode="sum",
                                     per_sample_weights=vals.index_select(0, order)).to(dt)
            gW_enc = F.embedding_bag(rows_t, xl, col_offsets, mode="sum",
                                     per_sample_weights=g_vals.to(cdt).index_select(0, order)
                                     ).to(dt)
            gb_enc = torch.zeros_like(norms).index_add_(0, code.cols, g_vals)
        else:
            g_pre = torch.addmm((norms * c).to(cdt), gl, Wd.T,
                                out=reused(ctx.work, "g_pre", (b, d), gl, cdt))
            # zero where the ReLU was off: relu's own backward, in place (one vectorised pass)
            torch.ops.aten.threshold_backward.grad_input(g_pre, acts, 0, grad_input=g_pre)
            gW_dec = torch.mm(acts.T, gl).to(dt)
            gW_enc = torch.mm(g_pre.T, xl).to(dt)
            gb_enc = _colsum(g_pre, dt)
        # the penalty's pull on the decoder norms: c * c_j * W_dec_j / n_j
        gW_dec.addcmul_((c * colsum / norms.clamp_min(1e-12)).unsqueeze(1), W_dec)
        gb_dec = g_recon.sum(0)
        if ctx.shift:
            gb_dec -= gb_enc @ enc_weight
        return (None, None, gW_enc, gb_enc, gW_dec, gb_dec, None, None, None, None, None, None)


_INT_OF = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32,
           torch.float64: torch.int64}


def _colsum(a: Tensor, dtype: torch.dtype) -> Tensor:
    """Column sums of a [rows, cols] tensor in `dtype`; a bf16 one as a ones-vector matmul
    (fp32 accumulation, ~8x faster than a bf16 reduction on CPU; result rounded to bf16)."""
    if a.dtype in (torch.bfloat16, torch.float16):
        return torch.mm(a.new_ones(1, a.shape[0]), a).squeeze(0).to(dtype)
    return a.sum(0).to(dtype)


def _autocast_on(device: torch.device) -> bool:
    """Whether autocast is on for `device` (False for devices without autocast, e.g. meta)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:
        return False


def dense_loss_output(loss: Tensor, recon: Tensor, acts: Float[Tensor, "batch d_sae"],
                      parts: dict[str, Tensor]) -> LossOutput:
    """A `LossOutput` from dense activations: which latents fired and the mean L0."""
    active = acts > 0
    return LossOutput(loss=loss, recon=recon.detach(), fired=active.any(dim=0),
                      l0=active.sum(dim=-1).float().mean(), parts=parts)


class StandardSAE(SparseDictionary):
    """ReLU SAE (or transcoder) trained with the decoder-norm-weighted L1 penalty."""

    architecture = "standard"
    options = ("l1_coefficient",)  # the SAEConfig fields it reads

    unit_norm_decoder = False  # the penalty weights by ||W_dec_j||: the trainer must not renormalise
    #: dtype of the dense matmuls in training (None: full precision; the trainer's `autocast`
    #: sets its dtype (`use_lowp`), worth it where the hardware multiplies it natively)
    matmul_dtype: torch.dtype | None = None

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return F.relu(self.pre_acts(x))

    def use_lowp(self, dtype):
        self.matmul_dtype = dtype
        return True

    def step_memory(self, batch, device):
        """`StandardStep`'s two reused [batch, d_sae] buffers (the code and its gradient), and
        on the CPU the sparse code at the densest it is used (ids, values, the transpose)."""
        if self.W_skip is not None:
            return super().step_memory(batch, device)
        item = self.matmul_dtype.itemsize if self.matmul_dtype is not None else 4
        s, c = self.cfg.d_sae, self.cfg
        density = 0.0 if sync_free(device) else (SPARSE_DENSITY_LOWP if self.matmul_dtype
                                                 else SPARSE_DENSITY)
        return {"buffers": 2 * batch * s * item,
                "step": int(44 * density * batch * s) + 3 * batch * c.out_dim * 4}

    @torch.no_grad()
    def initialise(self, seed: int = 0) -> StandardSAE:
        """As the April update advises: decoder rows of norm 0.1 (not 1), the encoder their
        transpose, b_enc = 0; unit rows would start with a reconstruction several times the
        input's norm (half of all latents fire at first) and far from the penalty's balance."""
        super().initialise(seed)
        self.W_dec.mul_(INIT_DECODER_NORM)
        if self.cfg.out_dim == self.cfg.d_in:
            self.enc_weight.copy_(self.W_dec)
        return self

    def training_loss(self, x: Tensor, target: Tensor, dead: Tensor | None = None,
                      sparsity_scale: float = 1.0) -> LossOutput:
        lam = sparsity_scale * self.cfg.l1_coefficient
        if self.W_skip is None and not _autocast_on(x.device):
            lowp = self.matmul_dtype
            loss, recon, mse, l1, fired, l0 = StandardStep.apply(
                x, target, self.enc_weight, self.b_enc, self.W_dec, self.b_dec, lam,
                self.cfg.apply_b_dec_to_input,
                SPARSE_DENSITY_LOWP if lowp else SPARSE_DENSITY, lowp,
                SDDMM_DENSITY_LOWP if lowp else SDDMM_DENSITY, self.scratch)
            return LossOutput(loss=loss, recon=recon, fired=fired,
                              l0=l0 if isinstance(l0, Tensor) else torch.tensor(l0),
                              parts={"mse": mse, "l1": l1})
        return self.reference_loss(x, target, sparsity_scale)

    def reference_loss(self, x: Tensor, target: Tensor, sparsity_scale: float = 1.0
                       ) -> LossOutput:
        """The loss by autograd on the formula (skip-transcoders, autocast, and the tests)."""
        acts = self.encode(x)
        recon = acts @ self.W_dec + self.b_dec + self._skip(x)
        mse = (target - recon).pow(2).sum(-1).mean()
        l1 = (acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + sparsity_scale * self.cfg.l1_coefficient * l1
        return dense_loss_output(loss, recon, acts, {"mse": mse.detach(), "l1": l1.detach()})


__all__ = ["StandardSAE", "StandardStep", "dense_loss_output"]
