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
"""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from saes.base import LossOutput, SparseDictionary, register


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

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return F.relu(self.pre_acts(x))

    def training_loss(self, x: Tensor, target: Tensor, dead: Tensor | None = None,
                      sparsity_scale: float = 1.0) -> LossOutput:
        acts = self.encode(x)
        recon = acts @ self.W_dec + self.b_dec + self._skip(x)
        mse = (target - recon).pow(2).sum(-1).mean()
        l1 = (acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + sparsity_scale * self.cfg.l1_coefficient * l1
        return dense_loss_output(loss, recon, acts, {"mse": mse.detach(), "l1": l1.detach()})


__all__ = ["StandardSAE", "dense_loss_output"]
