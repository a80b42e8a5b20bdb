"""The detached Jacobian of one forward pass as a linear operator, and the autograd references.

Golden (arXiv 2505.24293, eq. 2): at the operating point x* (the prompt's input embeddings),
y* = Σ_i J⁺_i(x*) · x*_i, with J⁺ the Jacobian of the detached forward. `DetachedJacobian`
records the frozen factors with one forward pass and then applies J (`matvec`, a replayed forward
pass over a batch of vectors) and Jᵀ (`rmatvec`, the hand-written adjoint of `interp.models.adjoint`) without autograd;
`dense()` materialises J from d_model adjoint products and `svd()` its top singular triplets
from a block Krylov space. The exactness check needs a single forward product: J x* (plus the
constant bias term c = F(0) for models with biases) against y*; `svd()` computes it in its first
batch.

`autograd_jacobian` is the paper's way (torch.autograd.functional.jacobian, vectorize=True, on
the detached forward) and, with mode="ordinary", the conventional Jacobian (the control that must
fail the check).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.models.adjoint import Adjoint
from interp.models.frozen import FINAL, Frozen, parse_site, run
from interp.models.transformer import Net
from interp.linearise.svd import Triplets, block_krylov_svd, krylov_block


class DetachedJacobian:
    """J = ∂ site[position] / ∂ x for x = input embeddings [pos, d_model] of one prompt.

    Positions after `position` cannot influence it (causal attention), so x is cut there: J has
    shape [d_model, position + 1, d_model] and the output is read at the last kept position.
    """

    def __init__(self, net: Net, x: Float[Tensor, "pos d_model"], site: str = FINAL,
                 position: int = -1):
        if x.ndim != 2:
            raise InterpError(f"x must be [pos, d_model] input embeddings, got shape {tuple(x.shape)}.")
        n = x.shape[0]
        if not -n <= position < n:
            raise InterpError(f"position {position} is outside the prompt's {n} tokens "
                              f"(use 0..{n - 1} or -1 for the last).")
        parse_site(site, net.n_layers)
        self.net, self.site = net, site
        self.position = position % n
        self.x = x[: self.position + 1].to(net.dtype)
        fz = Frozen("detach")
        with torch.no_grad():
            self.y = run(net, self.x, fz, [site])[site][-1]
            self.frozen = fz.replay()
            self.adjoint = Adjoint(net, self.frozen.values)
            self.bias_term = (run(net, torch.zeros_like(self.x), self.frozen, [site])[site][-1]
                              if net.has_bias else torch.zeros_like(self.y))
        self._jx: Tensor | None = None  # J x*, kept once computed

    @property
    def n_pos(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.y.shape[-1], self.n_pos, self.x.shape[-1])

    def matvec(self, v: Float[Tensor, "batch pos d_model"], sites: list[str] | None = None):
        """J v for a batch of input-space vectors: [batch, d_out] (a dict when `sites` given)."""
        with torch.no_grad():
            out = run(self.net, v.to(self.net.dtype), self.frozen, sites or [self.site], bias=False)
        if sites is not None:
            return {s: t[..., -1, :] for s, t in out.items()}
        return out[self.site][..., -1, :]

    def rmatvec(self, u: Float[Tensor, "batch d_out"], site: str | None = None
                ) -> Float[Tensor, "batch pos d_model"]:
        """Jᵀ u for a batch of output-space vectors (any site up to the recorded one)."""
        with torch.no_grad():
            G = self.adjoint.site(u.to(self.net.dtype), site or self.site, self.n_pos - 1,
                                  self.n_pos)
        return G.transpose(0, 1)

    def reconstruct(self) -> Tensor:
        """Σ_i J_i x_i (+ the bias term): equals `y` when the linearisation is exact."""
        if self._jx is None:
            self._jx = self.matvec(self.x[None])[0]
        return self._jx + self.bias_term

    def svd(self, k: int = 32, block: int = 0, tol: float = 1e-5, n_iter: int | None = None,
            seed: int = 0, fro_probes: int = 8) -> Triplets:
        """Top-k singular triplets of the stacked Jacobian from a block Krylov space
        (`block_krylov_svd`; block 0: `krylov_block(n_pos)`). The exactness check's product
        J x* rides along in the first batch of forward products, so `rel_error` is free after."""
        def matvec(v: Tensor) -> Tensor:
            if self._jx is not None:
                return self.matvec(v)
            out = self.matvec(torch.cat([v, self.x[None].to(v.dtype)]))
            self._jx = out[-1]
            return out[:-1]

        return block_krylov_svd(matvec, self.rmatvec, (self.n_pos, self.x.shape[-1]), k=k,
                                block=block or krylov_block(self.n_pos), n_iter=n_iter, tol=tol,
                                seed=seed, dtype=self.net.dtype, fro_probes=fro_probes)

    def rel_error(self) -> float:
        """‖Σ_i J_i x_i + c − y‖ / ‖y‖ (one forward product, none after `svd()`)."""
        return float((self.reconstruct() - self.y).norm() / self.y.norm())

    def contributions(self) -> Float[Tensor, "pos d_out"]:
        """J_i x_i per input position (they sum to `y` minus the bias term)."""
        n = self.n_pos
        v = torch.zeros(n, n, self.x.shape[-1], dtype=self.x.dtype)
        v[torch.arange(n), torch.arange(n)] = self.x
        return self.matvec(v)

    def dense(self, chunk: int = 96, site: str | None = None) -> Float[Tensor, "d_out pos d_in"]:
        """The full Jacobian from d_out adjoint products (chunked to bound memory)."""
        d = self.y.shape[-1]
        eye = torch.eye(d, dtype=self.net.dtype)
        return torch.cat([self.rmatvec(eye[i: i + chunk], site) for i in range(0, d, chunk)])


def autograd_jacobian(net: Net, x: Float[Tensor, "pos d_model"], site: str = FINAL,
                      mode: str = "detach") -> Float[Tensor, "d_out pos d_model"]:
    """The Jacobian of site[last position] by autograd, the paper's way (reference and baseline).

    mode "detach": the detached Jacobian J⁺; "ordinary": the conventional one (no freezing).
    """
    def f(inp: Tensor) -> Tensor:
        return run(net, inp, Frozen(mode), [site])[site][-1]

    return torch.autograd.functional.jacobian(f, x.to(net.dtype), vectorize=True,
                                              strategy="reverse-mode")


def reconstruction_error(jac: Tensor, x: Tensor, y: Tensor, bias_term: Tensor | None = None
                         ) -> float:
    """‖Σ_i J_i x_i (+ c) − y‖ / ‖y‖ for a dense Jacobian [d_out, pos, d_in]."""
    y_rec = torch.einsum("opi,pi->o", jac, x.to(jac.dtype))
    if bias_term is not None:
        y_rec = y_rec + bias_term
    return float((y_rec - y).detach().norm() / y.detach().norm())
