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
product), ReLU and masking are done in place, and once the code is sparse (density below
`SPARSE_DENSITY`) the decode and every gradient after the encoder's forward matmul go through
the active entries only (the top-k family's kernels: an SDDMM and `embedding_bag`s). Both paths
compute the same gradients as autograd on the formula above (tests/test_sae_architectures.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from saes.base import LossOutput, SparseDictionary, register
from saes.kernels import SparseCode, row_offsets

INIT_DECODER_NORM = 0.1
#: at or below this fraction of active entries the step runs on the sparse code
SPARSE_DENSITY = 0.1  # measured crossover on CPU at d_sae 4608: ~13% (sparse 1.4 s vs dense 1.6 s)


class StandardStep(torch.autograd.Function):
    """loss = ||y - (ReLU((x - s) W_enc^T + b_enc) W_dec + b_dec)||^2 / B + lam * sum_j n_j c_j / B

    with n_j = ||W_dec_j||, c_j the column sums of f, s = b_dec if `shift` else 0. Returns
    (loss, recon, mse, l1, fired [d_sae], l0); only the loss is differentiable."""

    @staticmethod
    def forward(ctx, x, target, enc_weight, b_enc, W_dec, b_dec, lam: float, shift: bool,
                sparse_density: float, lowp: torch.dtype | None = None):
        b = x.shape[0]
        x_c = x - b_dec if shift else x
        acts = _mm(x_c, enc_weight.T, lowp).add_(b_enc).relu_()
        norms = torch.linalg.vector_norm(W_dec, dim=1)
        colsum = acts.sum(0)
        nnz = int(torch.count_nonzero(acts))
        if nnz <= sparse_density * acts.numel():
            rows, cols = acts.nonzero(as_tuple=True)  # row-major: sorted by row
            vals = acts[rows, cols]
            code = SparseCode(rows, cols, row_offsets(rows, b), acts.shape[1])
            acts = None
            recon = F.embedding_bag(cols, W_dec, code.offsets, mode="sum",
                                    per_sample_weights=vals).add_(b_dec)
        else:
            code = vals = None
            recon = _mm(acts, W_dec, lowp).add_(b_dec)
        err = torch.sub(target, recon)
        mse = torch.linalg.vector_norm(err).square() / b
        l1 = colsum @ norms / b
        loss = mse + lam * l1
        mse, l1 = mse.clone(), l1.clone()  # outputs of their own (loss must not alias them)
        ctx.save_for_backward(x_c, enc_weight, W_dec, norms, err, colsum, acts, vals)
        ctx.code, ctx.lam, ctx.shift, ctx.lowp = code, lam, shift, lowp
        ctx.mark_non_differentiable(recon, mse, l1)
        return loss, recon, mse, l1, colsum > 0, nnz / b

    @staticmethod
    def backward(ctx, g, *_):
        x_c, enc_weight, W_dec, norms, err, colsum, acts, vals = ctx.saved_tensors
        code: SparseCode | None = ctx.code
        b = x_c.shape[0]
        g_recon = torch.mul(err, g * (-2.0 / b))
        c = g * ctx.lam / b  # d loss / d f_bj = c * n_j on top of the reconstruction's
        if code is not None:
            g_vals = code.sddmm(g_recon, W_dec).add_(norms[code.cols], alpha=float(c))
            order, rows_t, col_offsets = code.transposed()
            gW_dec = F.embedding_bag(rows_t, g_recon, col_offsets, mode="sum",
                                     per_sample_weights=vals[order])
            gW_enc = F.embedding_bag(rows_t, x_c, col_offsets, mode="sum",
                                     per_sample_weights=g_vals[order])
            gb_enc = torch.zeros_like(norms).index_add_(0, code.cols, g_vals)
        else:
            g_pre = _mm(g_recon, W_dec.T, ctx.lowp).add_(norms * c)
            g_pre.masked_fill_(acts <= 0, 0.0)
            gW_dec = _mm(acts.T, g_recon, ctx.lowp)
            gW_enc = _mm(g_pre.T, x_c, ctx.lowp)
            gb_enc = g_pre.sum(0)
        # the penalty's pull on the decoder norms: c * c_j * W_dec_j / n_j
        gW_dec.addcmul_((c * colsum / norms.clamp_min(1e-12)).unsqueeze(1), W_dec)
        gb_dec = g_recon.sum(0)
        if ctx.shift:
            gb_dec -= gb_enc @ enc_weight
        return None, None, gW_enc, gb_enc, gW_dec, gb_dec, None, None, None, None


def _mm(a: Tensor, b: Tensor, lowp: torch.dtype | None) -> Tensor:
    """a @ b in full precision, or multiplied in `lowp` (bf16) and returned in a's dtype."""
    if lowp is None:
        return torch.mm(a, b)
    return torch.mm(a.to(lowp), b.to(lowp)).to(a.dtype)


def dense_loss_output(loss: Tensor, recon: Tensor, acts: Float[Tensor, "batch d_sae"],
                      parts: dict[str, Tensor]) -> LossOutput:
    """A `LossOutput` from dense activations: which latents fired and the mean L0."""
    active = acts > 0
    return LossOutput(loss=loss, recon=recon.detach(), fired=active.any(dim=0),
                      l0=active.sum(dim=-1).float().mean(), parts=parts)


@register("standard")
class StandardSAE(SparseDictionary):
    """ReLU SAE (or transcoder) trained with the decoder-norm-weighted L1 penalty."""

    unit_norm_decoder = False  # the penalty weights by ||W_dec_j||: the trainer must not renormalise
    #: dtype of the dense matmuls in training (None: full precision; the trainer's `bf16=True`
    #: sets bfloat16, worth it where the hardware multiplies bf16 natively)
    matmul_dtype: torch.dtype | None = None

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return F.relu(self.pre_acts(x))

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
        if self.W_skip is None and not torch.is_autocast_enabled(x.device.type):
            loss, recon, mse, l1, fired, l0 = StandardStep.apply(
                x, target, self.enc_weight, self.b_enc, self.W_dec, self.b_dec, lam,
                self.cfg.apply_b_dec_to_input, SPARSE_DENSITY, self.matmul_dtype)
            return LossOutput(loss=loss, recon=recon, fired=fired,
                              l0=torch.tensor(float(l0)), parts={"mse": mse, "l1": l1})
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
