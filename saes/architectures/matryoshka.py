"""Matryoshka BatchTopK SAE: nested prefixes of the dictionary must each reconstruct the input.

Bussmann et al., "Learning Multi-Level Features with Matryoshka Sparse Autoencoders"
(arXiv 2503.17547). The latents are ordered; for nested widths m_1 < ... < m_n = d_sae the
prefix reconstruction uses only latents with index < m_i:

    x_hat_i = sum_{j < m_i} f_j W_dec_j + b_dec
    loss    = (1/n) sum_i ||y - x_hat_i||^2 + aux_coefficient * AuxK

with f selected by BatchTopK over the whole batch (arXiv 2412.06410), so early latents learn
general, frequent features and absorption into later ones is penalised. The paper sums the
levels; we average them (a constant factor), so with one width the loss is exactly BatchTopK's
and learning rates transfer. Each prefix is decoded from the same COO code with the entries
of later latents masked to zero. Exported like BatchTopK (a SAELens "jumprelu" with the
learned threshold).
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.errors import ConfigError
from saes.architectures.topk import BatchTopKSAE
from saes.base import LossOutput, SAEConfig
from saes.kernels import sparse_decode


def matryoshka_widths(cfg: SAEConfig) -> tuple[int, ...]:
    """The nested prefix widths of `cfg`, with d_sae appended if missing; validated."""
    widths = [int(w) for w in cfg.matryoshka_widths]
    if not widths or widths[-1] != cfg.d_sae:
        widths.append(cfg.d_sae)
    if widths[0] < 1 or any(b <= a for a, b in zip(widths, widths[1:])) or widths[-1] > cfg.d_sae:
        raise ConfigError(f"matryoshka_widths must be strictly increasing positive widths "
                          f"<= d_sae={cfg.d_sae}, got {list(cfg.matryoshka_widths)}.")
    return tuple(widths)


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK SAE trained with the mean of the nested-prefix reconstruction losses."""

    architecture = "matryoshka_batchtopk"
    options = ("k", "aux_k", "aux_coefficient", "matryoshka_widths")  # SAEConfig fields it reads

    def __init__(self, cfg):
        super().__init__(cfg)
        self.widths = matryoshka_widths(cfg)
        self._level_mse: Tensor | None = None

    def prefix_mses(self, x: Tensor, target: Tensor, cols: Tensor, acts: Tensor,
                    offsets: Tensor) -> tuple[Tensor, Tensor]:
        """(full reconstruction, [n_levels] MSE of each prefix) for one COO code."""
        skip = self._skip(x)
        code = getattr(self, "_code", None)  # the batch's SparseCode, shared by every prefix
        mses = []
        for w in self.widths[:-1]:
            vals = acts * (cols < w).to(acts.dtype)
            r = sparse_decode(cols, offsets, vals, self.W_dec, self.b_dec, code=code) + skip
            mses.append((target - r).pow(2).sum(-1).mean())
        recon = sparse_decode(cols, offsets, acts, self.W_dec, self.b_dec, code=code) + skip
        mses.append((target - recon).pow(2).sum(-1).mean())
        return recon, torch.stack(mses)

    def _recon_loss(self, x, x_c, target, rows, cols, acts, offsets):
        recon, mses = self.prefix_mses(x, target, cols, acts, offsets)
        self._level_mse = mses.detach()
        return recon, target - recon, mses.mean()

    def training_loss(self, x, target, dead=None, sparsity_scale=1.0) -> LossOutput:
        out = super().training_loss(x, target, dead, sparsity_scale)
        for w, m in zip(self.widths, self._level_mse):
            out.parts[f"mse_{w}"] = m
        self._level_mse = None
        return out
