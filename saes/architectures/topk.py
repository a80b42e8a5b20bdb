"""TopK and BatchTopK sparse autoencoders, on the sparse kernels.

TopK: Gao et al., "Scaling and evaluating sparse autoencoders" (arXiv 2406.04093): keep the k
largest pre-activations per row (ReLU applied after selection), AuxK loss on dead latents.
BatchTopK: Bussmann et al., "BatchTopK Sparse Autoencoders" (arXiv 2412.06410): keep the
k * batch largest of the whole batch; at inference a JumpReLU with a threshold estimated in
training (a running mean of the smallest kept activation), which is how it is exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from saes.base import LossOutput, SparseDictionary
from saes.kernels import (SampledLinear, SparseCode, SparseDecode, SparseDecodeMSE,
                          native_lowp_dtype, select_batch_topk, select_dead_topk, select_topk,
                          reused, select_topk_exact, select_topk_lowp, sparse_decode, sync_free)


class _TopKFamily(SparseDictionary):
    """Shared training step: select (no grad) -> sampled linear -> ReLU -> sparse decode.

    After selection nothing is dense: the encoder and decoder gradients go through the
    selected code only (`saes.kernels`), and AuxK looks at the dead latents' columns only.
    """

    options = ("k", "aux_k", "aux_coefficient")  # the SAEConfig fields it reads

    _code: SparseCode | None = None  # the batch's code while `training_loss` runs

    #: dtype of the selecting matmul; the selected values are then recomputed exactly (None:
    #: full precision; the trainer's `autocast` sets its dtype, `use_lowp`)
    select_dtype: torch.dtype | str | None = None

    def use_lowp(self, dtype):
        self.select_dtype = dtype
        return True

    def _select(self, x_c: Tensor) -> tuple[SparseCode, Tensor]:
        """The code of this batch and its exact pre-activation values (called without grad)."""
        lowp = self.select_dtype
        if lowp is not None and lowp != x_c.dtype:
            pre = F.linear(x_c.to(lowp), self.enc_weight.to(lowp), self.b_enc.to(lowp))
            rows, cols, _, offsets = self._select_dense(pre)
            code = SparseCode(rows, cols, offsets, self.cfg.d_sae)
            return code, code.sddmm(x_c, self.enc_weight, self.b_enc)
        pre = F.linear(x_c, self.enc_weight, self.b_enc)
        rows, cols, vals, offsets = self._select_dense(pre)
        return SparseCode(rows, cols, offsets, self.cfg.d_sae), vals

    def _select_dense(self, pre: Tensor):
        return select_topk(pre, self.cfg.k)

    def _recon_loss(self, x, x_c, target, rows, cols, acts, offsets):
        if self.W_skip is None and self._code is not None:
            mse, recon, err = SparseDecodeMSE.apply(acts, self.W_dec, self.b_dec, target,
                                                    self._code)
            return recon, err, mse
        recon = sparse_decode(cols, offsets, acts, self.W_dec, self.b_dec,
                              code=self._code) + self._skip(x)
        err = target - recon
        return recon, err, err.pow(2).sum(-1).mean()

    def _encode_sparse(self, x_c: Tensor, code: SparseCode, vals: Tensor) -> Tensor:
        """ReLU of the selected pre-activations, differentiable in the encoder and b_dec."""
        shift = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return F.relu(SampledLinear.apply(x_c, self.enc_weight, self.b_enc, shift, code, vals))

    def training_loss(self, x, target, dead=None, sparsity_scale=1.0) -> LossOutput:
        with torch.no_grad():  # x - b_dec enters the encoder; b_dec's gradient is in the kernel
            x_c = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
            code, vals = self._select(x_c)
        acts = self._encode_sparse(x_c, code, vals)
        self._code = code
        try:
            recon, err, mse = self._recon_loss(x, x_c, target, code.rows, code.cols, acts,
                                               code.offsets)
        finally:
            self._code = None
        parts = {"mse": mse.detach()}
        loss = mse
        if dead is not None and self.cfg.aux_coefficient > 0:
            if sync_free(x.device):  # no host read of the dead count: a masked top-k, zeroed
                aux = self._aux_loss_masked(x_c, err.detach(), dead)  # when none is dead
            elif bool(dead.any()):
                aux = self._aux_loss(x_c, err.detach(), dead)
            else:
                aux = None
            if aux is not None:
                loss = loss + self.cfg.aux_coefficient * aux
                parts["aux"] = aux.detach()
        active = acts > 0
        fired = torch.zeros(self.cfg.d_sae, dtype=acts.dtype, device=x.device)
        fired = fired.index_add_(0, code.cols, active.to(acts.dtype)) > 0
        self._after_step(acts, active)
        return LossOutput(loss=loss, recon=recon.detach(), fired=fired,
                          l0=active.sum() / x.shape[0], parts=parts)

    def _aux_loss(self, x_c: Tensor, e: Tensor, dead: Tensor) -> Tensor:
        """AuxK (Gao et al. appendix A.2): the top `aux_k` dead latents reconstruct the error,
        normalised by the error's own power."""
        with torch.no_grad():
            dead_ids = dead.nonzero().squeeze(1)
            k = min(self.cfg.aux_k, dead_ids.shape[0])
            pre = F.linear(x_c, self.enc_weight[dead_ids], self.b_enc[dead_ids])
            vals, j = pre.topk(k, dim=-1, sorted=False)
            b = x_c.shape[0]
            code = SparseCode(torch.arange(b, device=x_c.device).repeat_interleave(k),
                              dead_ids[j].reshape(-1),
                              torch.arange(0, b * k, k, device=x_c.device), self.cfg.d_sae)
        acts = self._encode_sparse(x_c, code, vals.reshape(-1))
        aux_recon = SparseDecode.apply(acts, self.W_dec, code)
        return (e - aux_recon).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)

    def _aux_loss_masked(self, x_c: Tensor, e: Tensor, dead: Tensor) -> Tensor:
        """AuxK with shapes known in advance: the top `aux_k` of all pre-activations with live
        latents masked to -inf (entries beyond the dead count are -inf, 0 after the ReLU), and
        the loss multiplied by whether any latent is dead. The same loss and gradients as
        `_aux_loss`, without reading the number of dead latents on the host."""
        with torch.no_grad():
            pre = F.linear(x_c, self.enc_weight, self.b_enc)
            rows, cols, vals, offsets = select_dead_topk(pre, dead, self.cfg.aux_k)
            code = SparseCode(rows, cols, offsets, self.cfg.d_sae)
        acts = self._encode_sparse(x_c, code, vals)
        aux_recon = SparseDecode.apply(acts, self.W_dec, code)
        aux = (e - aux_recon).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)
        return aux * dead.any().to(aux.dtype)

    def _after_step(self, acts, active) -> None:
        pass

    def step_memory(self, batch, device):
        """The selection's buffers (`_select_memory`), AuxK over every latent at worst (all
        dead), and the sparse codes."""
        c, s = self.cfg, self.cfg.d_sae
        buffers, select = self._select_memory(batch, device)
        if sync_free(device):
            aux = 2 * batch * s * 4  # the masked pre-activations over every latent
        else:
            aux = batch * s * 4 + s * c.d_in * 4  # the dead latents' matmul and weights
        codes = 48 * batch * (c.k + min(c.aux_k, s))  # ids, values, offsets, the transpose
        return {"buffers": buffers,
                "step": max(select, aux) + codes + 3 * batch * c.out_dim * 4}

    def _select_memory(self, batch: int, device) -> tuple[int, int]:
        """(bytes kept between steps, bytes alive while selecting): the dense pre-activations
        in the selecting dtype, and that dtype's copy of the encoder."""
        lowp = self.select_dtype if isinstance(self.select_dtype, torch.dtype) else None
        item = lowp.itemsize if lowp is not None else 4
        return 0, batch * self.cfg.d_sae * item + (
            self.cfg.d_sae * self.cfg.d_in * item if lowp is not None else 0)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """As the base class, in one pass over the gradient and no [d_sae, d] temporary."""
        if self.W_dec.grad is None:
            return
        w, g = self.W_dec, self.W_dec.grad
        g.addcmul_(torch.linalg.vecdot(g, w).unsqueeze(1), w, value=-1)


class TopKSAE(_TopKFamily):
    architecture = "topk"
    #: dtype of the selecting matmul (the selected values are then recomputed exactly):
    #: "auto" is bf16 where the hardware multiplies it natively, else full precision
    select_dtype: torch.dtype | str | None = "auto"

    def _select(self, x_c):
        dtype = self.select_dtype
        if dtype == "auto":
            dtype = native_lowp_dtype(x_c.device)
        if dtype is not None and dtype != x_c.dtype:
            return select_topk_lowp(x_c, self.enc_weight, self.b_enc, self.cfg.k, dtype=dtype)
        buf = reused(self.scratch, "pre", (x_c.shape[0], self.cfg.d_sae), x_c)
        return select_topk_exact(x_c, self.enc_weight, self.b_enc, self.cfg.k, out=buf)

    def encode(self, x):
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))

    def _select_memory(self, batch, device):
        dtype = native_lowp_dtype(device) if self.select_dtype == "auto" else self.select_dtype
        s, d = self.cfg.d_sae, self.cfg.d_in
        if dtype is not None and dtype != torch.float32:  # `select_topk_lowp`: row chunks
            rows = min(256, batch) if device.type == "cpu" else batch
            return 0, rows * s * dtype.itemsize + s * d * dtype.itemsize + batch * d * 2
        return batch * s * 4, 0  # `select_topk_exact`: one reused [batch, d_sae] buffer

    def saelens_architecture(self) -> str:
        if self.cfg.skip or self.cfg.out_dim != self.cfg.d_in:
            raise NotImplementedError(
                "SAELens has no top-k transcoder class for a skip connection or d_out != d_in; "
                "use a standard or jumprelu transcoder to exchange it with SAELens.")
        return "topk"

    def saelens_extra_cfg(self):
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}


class BatchTopKSAE(_TopKFamily):
    """Trained with batch-level top-k; encodes with the learned threshold (a JumpReLU)."""

    architecture = "batchtopk"

    threshold_beta = 0.999

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(-1.0, dtype=self.enc_weight.dtype))

    def _select_dense(self, pre):
        return select_batch_topk(pre, self.cfg.k)

    def _select_memory(self, batch, device):
        """As the family's, plus the top-k over the flattened batch, which works on (value,
        index) pairs of every entry: 16 bytes each (measured on the CPU)."""
        buffers, select = super()._select_memory(batch, device)
        return buffers, select + 16 * batch * self.cfg.d_sae

    @torch.no_grad()
    def _after_step(self, acts, active):
        """A running mean of the smallest kept activation (the first one taken as it is),
        without reading anything back to the host."""
        smallest = acts.masked_fill(~active, float("inf")).min()
        thr = self.threshold
        new = torch.where(thr < 0, smallest, torch.lerp(thr, smallest, 1 - self.threshold_beta))
        self.threshold.copy_(torch.where(active.any(), new, thr))

    def encode(self, x):
        pre = self.pre_acts(x)
        return F.relu(pre) * (pre > self.threshold.clamp_min(0))

    def saelens_architecture(self) -> str:
        base = "jumprelu_transcoder" if self.cfg.transcoder else "jumprelu"
        if self.cfg.skip:
            base = "jumprelu_skip_transcoder"
        return base

    def saelens_tensors(self):
        t = super().saelens_tensors()
        t["threshold"] = self.threshold.clamp_min(0).expand(self.cfg.d_sae).clone()
        return t

    @torch.no_grad()
    def load_saelens_tensors(self, tensors):
        thr = tensors.pop("threshold", None)
        super().load_saelens_tensors(tensors)
        if thr is not None:
            if not torch.equal(thr, thr[:1].expand_as(thr)):
                from interp.errors import ConfigError

                raise ConfigError("Tensor 'threshold' varies across latents, but a "
                                  f"{self.architecture!r} dictionary has one threshold; load it "
                                  "as a 'jumprelu' instead.")
            self.threshold.copy_(thr[0])
