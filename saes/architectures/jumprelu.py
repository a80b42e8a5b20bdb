"""JumpReLU SAE trained with straight-through pseudo-derivatives.

Rajamanoharan et al., "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse
Autoencoders" (arXiv 2407.14435). With a learned per-latent threshold theta = exp(log_threshold):

    f = JumpReLU_theta(pre) = pre * H(pre - theta)                       [batch, d_sae]
    loss = ||y - (f @ W_dec + b_dec)||^2 + lambda * S(f)                 (mean over rows)

H has zero derivative almost everywhere, so the paper defines pseudo-derivatives for theta with
a kernel K of bandwidth eps (here the rectangle K(u) = 1[|u| < 1/2]):

    d/dtheta JumpReLU_theta(z) := -(theta / eps) K((z - theta) / eps)
    d/dtheta H(z - theta)      := -(1 / eps) K((z - theta) / eps)

and the exact derivatives elsewhere (d/dz JumpReLU = H(z - theta), d/dz H = 0). The sparsity
term S is `cfg.jumprelu_sparsity`:
  - "step": the L0 norm sum_j H(pre_j - theta_j) (the paper), decoder kept at unit norm;
  - "tanh": sum_j tanh(c * f_j * ||W_dec_j||) (Anthropic, "Circuits Updates - January 2025"),
    decoder unconstrained since the penalty carries its norm.
Exported as SAELens "jumprelu" (or "jumprelu_transcoder" / "jumprelu_skip_transcoder") with
the tensor `threshold` = exp(log_threshold); `encode` is SAELens's relu(pre) * (pre > threshold).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import ConfigError
from saes.architectures.standard import dense_loss_output
from saes.base import LossOutput, SparseDictionary

SPARSITY_MODES = ("step", "tanh")


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1[-1/2 < u < 1/2]."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to_threshold(g: Tensor, theta: Tensor) -> Tensor:
    """Sum a [..., d_sae] gradient over the leading (row) dimensions to theta's shape."""
    return g.reshape(-1, g.shape[-1]).sum(0).reshape(theta.shape)


class JumpReLUFunction(torch.autograd.Function):
    """z * H(z - theta), with the paper's pseudo-derivative for theta (eq. 11)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        gz = grad * (z > theta).to(grad.dtype)
        gtheta = -(theta / eps) * rectangle((z - theta) / eps) * grad
        return gz, _sum_to_threshold(gtheta, theta), None


class StepFunction(torch.autograd.Function):
    """H(z - theta), with the pseudo-derivative -(1/eps) K((z - theta)/eps) for theta only."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        gtheta = -(1.0 / eps) * rectangle((z - theta) / eps) * grad
        return None, _sum_to_threshold(gtheta, theta), None


class JumpReLUSAE(SparseDictionary):
    """JumpReLU SAE / transcoder with a learned threshold theta = exp(log_threshold)."""

    architecture = "jumprelu"
    # pre, acts, their gradients and the pseudo-derivative's temporaries (measured: 7.3 at the
    # peak on the CPU); tanh: two more
    step_dense_tensors = 7.5
    options = ("l0_coefficient", "jumprelu_sparsity", "jumprelu_tanh_scale",
               "jumprelu_bandwidth", "jumprelu_init_threshold")  # the SAEConfig fields it reads

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.jumprelu_sparsity not in SPARSITY_MODES:
            raise ConfigError(f"jumprelu_sparsity must be one of {list(SPARSITY_MODES)}, "
                              f"got {cfg.jumprelu_sparsity!r}.")
        if cfg.jumprelu_bandwidth <= 0 or cfg.jumprelu_init_threshold <= 0:
            raise ConfigError("jumprelu_bandwidth and jumprelu_init_threshold must be positive, "
                              f"got {cfg.jumprelu_bandwidth} and {cfg.jumprelu_init_threshold}.")
        self.log_threshold = nn.Parameter(torch.full(
            (cfg.d_sae,), math.log(cfg.jumprelu_init_threshold), dtype=self.enc_weight.dtype))

    @property
    def unit_norm_decoder(self) -> bool:
        """The L0 penalty is scale-free, so the paper trains a unit-norm decoder; the tanh
        penalty weights by ||W_dec_j|| and leaves the decoder free."""
        return self.cfg.jumprelu_sparsity == "step"

    def step_memory(self, batch, device):
        out = super().step_memory(batch, device)
        if self.cfg.jumprelu_sparsity == "tanh":
            out["step"] += 2 * batch * self.cfg.d_sae * 4
        return out

    @property
    def threshold(self) -> Float[Tensor, " d_sae"]:
        return self.log_threshold.exp()

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        pre = self.pre_acts(x)
        return F.relu(pre) * (pre > self.threshold).to(pre.dtype)

    def training_loss(self, x: Tensor, target: Tensor, dead: Tensor | None = None,
                      sparsity_scale: float = 1.0) -> LossOutput:
        pre = self.pre_acts(x)
        theta = self.threshold
        eps = self.cfg.jumprelu_bandwidth
        acts = JumpReLUFunction.apply(pre, theta, eps)
        recon = acts @ self.W_dec + self.b_dec + self._skip(x)
        mse = (target - recon).pow(2).sum(-1).mean()
        if self.cfg.jumprelu_sparsity == "step":
            penalty = StepFunction.apply(pre, theta, eps).sum(-1).mean()
        else:
            scaled = self.cfg.jumprelu_tanh_scale * acts * self.W_dec.norm(dim=1)
            penalty = torch.tanh(scaled).sum(-1).mean()
        loss = mse + sparsity_scale * self.cfg.l0_coefficient * penalty
        return dense_loss_output(loss, recon, acts, {"mse": mse.detach(),
                                                     "sparsity": penalty.detach()})

    # ----------------------------------------------------------------- export
    def saelens_tensors(self) -> dict[str, Tensor]:
        out = super().saelens_tensors()
        out["threshold"] = self.threshold.detach().contiguous()
        return out

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of `saelens_tensors` (thresholds <= 0 act like 0 and load as the smallest
        positive float)."""
        self.enc_weight.copy_(tensors["W_enc"].T)
        for name in ("b_enc", "W_dec", "b_dec", "W_skip"):
            if name in tensors:
                getattr(self, name).copy_(tensors[name])
        thr = tensors["threshold"].to(self.log_threshold.dtype)
        self.log_threshold.copy_(thr.clamp_min(torch.finfo(thr.dtype).tiny).log())
