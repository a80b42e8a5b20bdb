"""Gated SAE: separate "which latents fire" and "how strongly" paths.

Rajamanoharan et al., "Improving Dictionary Learning with Gated Sparse Autoencoders"
(arXiv 2404.16014). With x_c = x - b_dec and a shared encoder W_enc [d_in, d_sae]:

    pi_gate = x_c @ W_enc + b_gate                       (gate pre-activation)
    pi_mag  = x_c @ (W_enc * exp(r_mag)) + b_mag         (magnitude pre-activation)
    f       = 1[pi_gate > 0] * ReLU(pi_mag)              [batch, d_sae]
    loss    = ||x - (f @ W_dec + b_dec)||^2
              + lambda * || ReLU(pi_gate) * ||W_dec|| ||_1
              + ||x - (ReLU(pi_gate) @ stopgrad(W_dec) + stopgrad(b_dec))||^2

The L1 penalty sees only the gate path, so it does not shrink magnitudes; the auxiliary
reconstruction trains the gate to be a useful encoder without moving the decoder. As in
SAELens's `GatedTrainingSAE` the penalty carries the decoder row norms and the decoder is left
unconstrained. The base class's `b_enc` is the gate bias `b_gate`. Exported as SAELens "gated"
with exactly the tensors W_enc, W_dec, b_dec, b_gate, b_mag, r_mag.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from saes.architectures.standard import dense_loss_output
from saes.base import LossOutput, SparseDictionary


class GatedSAE(SparseDictionary):
    """Gated SAE; `b_enc` (the base parameter) is the gate bias b_gate."""

    architecture = "gated"
    options = ("l1_coefficient",)  # the SAEConfig fields it reads

    unit_norm_decoder = False  # the L1 penalty weights by ||W_dec_j||
    # the shared product, gate and magnitude paths, their masks, acts and the aux path
    # (measured: 8.1 at the peak on the CPU)
    step_dense_tensors = 8.5

    def __init__(self, cfg):
        super().__init__(cfg)
        dt = self.enc_weight.dtype
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dt))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dt))

    @property
    def b_gate(self) -> Tensor:
        return self.b_enc

    def gate_and_magnitude(self, x: Float[Tensor, "... d_in"]
                           ) -> tuple[Float[Tensor, "... d_sae"], Float[Tensor, "... d_sae"]]:
        """(pi_gate, pi_mag), sharing one encoder matmul."""
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        x_enc = F.linear(x, self.enc_weight)
        return x_enc + self.b_enc, x_enc * self.r_mag.exp() + self.b_mag

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        gate, mag = self.gate_and_magnitude(x)
        return (gate > 0).to(mag.dtype) * F.relu(mag)

    def loss_terms(self, x: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The un-weighted loss terms (mse, l1, aux), plus `acts` and `recon`."""
        gate, mag = self.gate_and_magnitude(x)
        acts = (gate > 0).to(mag.dtype) * F.relu(mag)
        skip = self._skip(x)
        recon = acts @ self.W_dec + self.b_dec + skip
        gate_acts = F.relu(gate)
        l1 = (gate_acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        skip_d = skip.detach() if isinstance(skip, Tensor) else skip
        via_gate = gate_acts @ self.W_dec.detach() + self.b_dec.detach() + skip_d
        return {"mse": (target - recon).pow(2).sum(-1).mean(), "l1": l1,
                "aux": (target - via_gate).pow(2).sum(-1).mean(), "acts": acts, "recon": recon}

    def training_loss(self, x: Tensor, target: Tensor, dead: Tensor | None = None,
                      sparsity_scale: float = 1.0) -> LossOutput:
        t = self.loss_terms(x, target)
        loss = t["mse"] + sparsity_scale * self.cfg.l1_coefficient * t["l1"] + t["aux"]
        parts = {k: t[k].detach() for k in ("mse", "l1", "aux")}
        return dense_loss_output(loss, t["recon"], t["acts"], parts)

    # ----------------------------------------------------------------- export
    def saelens_architecture(self) -> str:
        if self.cfg.transcoder:
            raise NotImplementedError(
                "SAELens has no gated transcoder class; train a 'standard' or 'jumprelu' "
                "transcoder to export to SAELens.")
        return "gated"

    def saelens_tensors(self) -> dict[str, Tensor]:
        out = {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
               "b_gate": self.b_enc, "b_mag": self.b_mag, "r_mag": self.r_mag}
        return {k: v.detach().contiguous() for k, v in out.items()}

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of `saelens_tensors`."""
        self.enc_weight.copy_(tensors["W_enc"].T)
        self.b_enc.copy_(tensors["b_gate"])
        for name in ("W_dec", "b_dec", "b_mag", "r_mag"):
            getattr(self, name).copy_(tensors[name])
