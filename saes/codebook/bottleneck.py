"""The codebook bottleneck: snap an activation to the mean of its top-k codes.

Codebook Features (Tamkin, Taufeeque, Goodman; arXiv 2310.17230, section 2.1). For an input
x (one head's output, or an MLP / residual vector):

    x_hat = LayerNorm(x)                       (no affine parameters)
    s_c   = x_hat . c / ||c||                  (for every code c: cosine ordering)
    ids   = top-k of s                         [.., k]
    out   = mean of the k codes C[ids]         replaces the activation (not de-normalised)

Gradients are straight-through: d out / d x_hat is the identity. The codebook receives the
gradient of the network loss through `out` plus the gradient of the reconstruction loss
mean_tokens ||out - stop_grad(x_hat)||^2 ("aeloss", the paper's default), so the overall
objective is  L = -sum log p(x_i | x_<i) + MSE(C(x), sg(x)).  Variants: "base" (no MSE),
"vqvae" (MSE into the codebook only, plus the commitment term 2*beta*(x_hat - out) into x),
"fullaeloss" (both). A code id of -1 means "zero-ablated": it adds nothing to the mean.

A layer holds `groups` independent codebooks (one per attention head for `attn.hook_z`, the
paper's `attn_preproj` grouped codebook; one for an MLP or residual vector).

`denormalise=True` (not in the paper) rescales the output with x's own LayerNorm statistics,
out * std(x) + mean(x): the paper fine-tunes the model around the un-normalised output, which a
frozen model cannot do (a residual stream with a 25 000-norm BOS position and ~180-norm tokens
then needs its scale back).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.config import Config
from interp.errors import ConfigError, InterpError

SIMILARITIES = ("inner_product", "euclidean")
LOSSES = ("aeloss", "base", "vqvae", "fullaeloss")
LN_EPS = 1e-5
KMEANS_CHUNK = 8192  # rows per similarity matrix in the k-means init (bounds its memory)


@dataclass(frozen=True)
class CodebookConfig(Config):
    """Settings of one codebook layer (paper defaults for language models: C=10000, k=8;
    TokFSM: C=1000, k=1)."""

    n_codes: int = 1000
    k: int = 1
    similarity: str = "inner_product"  # "inner_product" (cosine ordering) | "euclidean"
    loss: str = "aeloss"  # "aeloss" | "base" | "vqvae" | "fullaeloss"
    beta: float = 0.25  # commitment weight of "vqvae" (the code's default)
    layer_norm: bool = True  # paper: snap LayerNorm(x); False snaps raw x (frozen models)
    denormalise: bool = False  # with layer_norm: out * std(x) + mean(x) (frozen models)
    seed: int = 0

    def __post_init__(self):
        if self.n_codes < 1 or not 1 <= self.k <= self.n_codes:
            raise ConfigError(f"Need n_codes >= 1 and 1 <= k <= n_codes, got n_codes="
                              f"{self.n_codes}, k={self.k}.")
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"similarity must be one of {SIMILARITIES}, not {self.similarity!r}.")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, not {self.loss!r}.")
        if self.denormalise and not self.layer_norm:
            raise ConfigError("denormalise=True restores the scale LayerNorm removed: it needs "
                              "layer_norm=True.")


def denormalise(out: Float[Tensor, "... d"], x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """Undo `normalise` with x's own statistics: out * std(x) + mean(x) (per row)."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return out * (var + LN_EPS).sqrt() + mean


def normalise(x: Float[Tensor, "... d"], layer_norm: bool = True) -> Float[Tensor, "... d"]:
    """The bottleneck's input: LayerNorm without affine parameters (or x itself)."""
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS) if layer_norm else x


@torch.no_grad()
def top_codes(x: Float[Tensor, "n g d"], codebook: Float[Tensor, "g c d"], k: int,
              similarity: str = "inner_product") -> Int[Tensor, "n g k"]:
    """Ids of the k most similar codes of each group's codebook, most similar first."""
    if similarity == "inner_product":
        unit = codebook / codebook.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = torch.einsum("ngd,gcd->ngc", x, unit)
    elif similarity == "euclidean":
        scores = -torch.cdist(x.transpose(0, 1), codebook).transpose(0, 1)
    else:
        raise ConfigError(f"similarity must be one of {SIMILARITIES}, not {similarity!r}.")
    return scores.topk(k, dim=-1).indices


def decode_codes(ids: Int[Tensor, "n g k"], codebook: Float[Tensor, "g c d"]
                 ) -> Float[Tensor, "n g d"]:
    """Mean of the codes named by `ids` (differentiable in the codebook; id -1 adds zero)."""
    g, c, _ = codebook.shape
    k = ids.shape[-1]
    valid = ids >= 0
    flat = (ids.clamp_min(0) + torch.arange(g, device=ids.device).view(1, g, 1) * c)
    vecs = F.embedding(flat, codebook.reshape(g * c, -1))  # [n, g, k, d]
    vecs = vecs * valid.unsqueeze(-1).to(vecs.dtype)
    return vecs.sum(dim=-2) / k


def _scatter_codes(grad: Float[Tensor, "n g d"], ids: Int[Tensor, "n g k"],
                   shape: torch.Size) -> Float[Tensor, "g c d"]:
    """Send `grad / k` of each row to each of its (valid) k codes: d(mean of codes)^T grad."""
    g, c, d = shape
    k = ids.shape[-1]
    valid = (ids >= 0).reshape(-1)
    flat = (ids.clamp_min(0) + torch.arange(g, device=ids.device).view(1, g, 1) * c).reshape(-1)
    rows = (grad / k).unsqueeze(-2).expand(*ids.shape, d).reshape(-1, d)
    out = torch.zeros(g * c, d, dtype=grad.dtype, device=grad.device)
    out.index_add_(0, flat[valid], rows[valid])
    return out.view(g, c, d)


class SnapFunction(torch.autograd.Function):
    """out = mean of C[ids], with the paper's straight-through backward (see module doc)."""

    @staticmethod
    def forward(ctx, x, codebook, ids, loss: str, beta: float):
        out = decode_codes(ids, codebook)
        ctx.save_for_backward(x, codebook, ids, out)
        ctx.loss, ctx.beta = loss, beta
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, codebook, ids, out = ctx.saved_tensors
        n = x.shape[0]
        grad_x = grad_out
        mse_grad = None
        if ctx.loss != "base":  # d/dC of mean_n ||out - sg(x)||^2 (summed over d and groups)
            mse_grad = _scatter_codes(2.0 * (out - x) / n, ids, codebook.shape)
        if ctx.loss == "vqvae":
            grad_c = mse_grad
            grad_x = grad_out + 2.0 * ctx.beta * (x - out)
        else:
            grad_c = _scatter_codes(grad_out, ids, codebook.shape)
            if mse_grad is not None:
                grad_c = grad_c + mse_grad
            if ctx.loss == "fullaeloss":
                grad_x = grad_out + 2.0 * (x - out)
        return grad_x, grad_c, None, None, None


def snap(x: Float[Tensor, "n g d"], codebook: Float[Tensor, "g c d"], k: int,
         similarity: str = "inner_product", loss: str = "aeloss", beta: float = 0.25,
         ids: Int[Tensor, "n g k"] | None = None
         ) -> tuple[Float[Tensor, "n g d"], Int[Tensor, "n g k"]]:
    """Snap each row of `x` (already normalised) to the mean of its top-k codes.

    Returns `(out, ids)`; pass `ids` to decode given codes instead (patching) with the same
    gradients.
    """
    if ids is None:
        ids = top_codes(x.detach(), codebook.detach(), k, similarity)
    return SnapFunction.apply(x, codebook, ids, loss, beta), ids


IdsHook = Callable[[Tensor], Tensor]


class CodebookLayer(nn.Module):
    """`groups` codebooks of `n_codes` vectors of size `d`, applied to x of shape [..., g, d].

    Records the ids of its last call in `last_ids` ([..., g, k]) and, while `counting`, adds
    them to `counts` ([g, n_codes]). `id_hooks` (functions ids -> ids, applied in order) edit
    the chosen codes before decoding: this is how codes are patched or steered.
    """

    def __init__(self, d: int, groups: int = 1, cfg: CodebookConfig | None = None):
        super().__init__()
        self.cfg = cfg or CodebookConfig()
        self.d, self.groups = d, groups
        g = torch.Generator().manual_seed(self.cfg.seed)
        self.codebook = nn.Parameter(torch.randn(groups, self.cfg.n_codes, d, generator=g))
        self.register_buffer("counts", torch.zeros(groups, self.cfg.n_codes, dtype=torch.long),
                             persistent=False)
        self.counting = True
        self.record = True
        self.last_ids: Tensor | None = None
        self.last_input: Tensor | None = None  # normalised input of the last call (detached)
        self.id_hooks: list[IdsHook] = []

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"groups={self.groups}, n_codes={c.n_codes}, d={self.d}, k={c.k}, "
                f"similarity={c.similarity}, loss={c.loss}, layer_norm={c.layer_norm}")

    def _check(self, x: Tensor) -> None:
        if x.shape[-2:] != (self.groups, self.d):
            raise ConfigError(f"Codebook layer expects inputs [..., {self.groups}, {self.d}] "
                              f"(groups, d), got {tuple(x.shape)}.")

    def encode(self, x: Float[Tensor, "... g d"]) -> Int[Tensor, "... g k"]:
        """The top-k code ids of x (no patching, no recording)."""
        self._check(x)
        xn = normalise(x, self.cfg.layer_norm).reshape(-1, self.groups, self.d)
        ids = top_codes(xn, self.codebook.detach(), self.cfg.k, self.cfg.similarity)
        return ids.view(*x.shape[:-1], self.cfg.k)

    def decode(self, ids: Int[Tensor, "... g k"]) -> Float[Tensor, "... g d"]:
        """Mean of the codes `ids` (-1: zero-ablated slot), in the normalised space."""
        flat = ids.reshape(-1, self.groups, ids.shape[-1])
        return decode_codes(flat, self.codebook).view(*ids.shape[:-1], self.d)

    def forward(self, x: Float[Tensor, "... g d"]) -> Float[Tensor, "... g d"]:
        self._check(x)
        lead = x.shape[:-2]
        xn = normalise(x, self.cfg.layer_norm).reshape(-1, self.groups, self.d)
        ids = top_codes(xn.detach(), self.codebook.detach(), self.cfg.k, self.cfg.similarity)
        if self.id_hooks:
            ids = ids.view(*lead, self.groups, -1)
            for fn in self.id_hooks:
                ids = fn(ids)
            ids = ids.reshape(-1, self.groups, ids.shape[-1]).to(torch.long)
        out, _ = snap(xn.to(self.codebook.dtype), self.codebook, self.cfg.k,
                      loss=self.cfg.loss, beta=self.cfg.beta, ids=ids)
        if self.counting:
            with torch.no_grad():
                valid = ids >= 0
                flat = (ids.clamp_min(0) + torch.arange(self.groups).view(1, -1, 1)
                        * self.cfg.n_codes)[valid]
                self.counts.view(-1).index_add_(0, flat, torch.ones_like(flat))
        if self.record:
            self.last_ids = ids.view(*lead, self.groups, -1).detach()
            self.last_input = xn.view(*lead, self.groups, self.d).detach()
        out = out.view(*lead, self.groups, self.d).to(x.dtype)
        return denormalise(out, x) if self.cfg.denormalise else out

    def reconstruction_loss(self, x: Float[Tensor, "... g d"]) -> Tensor:
        """mean_rows ||mean(C[ids]) - sg(x_hat)||^2 summed over d and groups (the aeloss term),
        differentiable in the codebook only: for training codebooks on stored activations."""
        self._check(x)
        xn = normalise(x.detach(), self.cfg.layer_norm).reshape(-1, self.groups, self.d)
        ids = top_codes(xn, self.codebook.detach(), self.cfg.k, self.cfg.similarity)
        if self.counting:
            with torch.no_grad():
                flat = (ids + torch.arange(self.groups).view(1, -1, 1) * self.cfg.n_codes)
                self.counts.view(-1).index_add_(0, flat.reshape(-1),
                                                torch.ones(flat.numel(), dtype=torch.long))
        out = decode_codes(ids, self.codebook)
        return ((out - xn) ** 2).sum(dim=(-1, -2)).mean()

    @torch.no_grad()
    def replace_dead_codes(self, x_hat: Float[Tensor, "... g d"] | None = None, rho: float = 1e-4,
                           generator: torch.Generator | None = None) -> int:
        """Reset codes that never fired since the counts were last zeroed to random rows of
        x_hat (normalised inputs; default: those of the last call) plus rho*||x||*N(0, I) noise
        (the paper's dead-code replacement); zero the counts. Returns the number replaced."""
        x_hat = self.last_input if x_hat is None else x_hat
        if x_hat is None:
            raise InterpError("replace_dead_codes needs inputs: run the layer once first.")
        xn = x_hat.detach().reshape(-1, self.groups, self.d)
        replaced = 0
        for gi in range(self.groups):
            dead = (self.counts[gi] == 0).nonzero().view(-1)
            if dead.numel() == 0 or xn.shape[0] == 0:
                continue
            rows = torch.randint(0, xn.shape[0], (dead.numel(),), generator=generator)
            src = xn[rows, gi]
            noise = torch.randn(src.shape, generator=generator)
            self.codebook[gi, dead] = src + rho * src.norm(dim=-1, keepdim=True) * noise
            replaced += dead.numel()
        self.counts.zero_()
        return replaced

    @torch.no_grad()
    def init_from_data(self, x: Float[Tensor, "... g d"], kmeans_iters: int = 0,
                       generator: torch.Generator | None = None) -> None:
        """Set the codes to random rows of x_hat, then run `kmeans_iters` Lloyd steps
        (the paper's optional k-means initialisation)."""
        xn = normalise(x.detach(), self.cfg.layer_norm).reshape(-1, self.groups, self.d)
        n, c = xn.shape[0], self.cfg.n_codes
        rows = torch.randint(0, n, (self.groups, c), generator=generator)
        for gi in range(self.groups):
            self.codebook[gi] = xn[rows[gi], gi]
        for _ in range(kmeans_iters):
            ids = torch.cat([top_codes(part, self.codebook, 1, self.cfg.similarity)[..., 0]
                             for part in xn.split(KMEANS_CHUNK)])  # [n, g]
            for gi in range(self.groups):
                sums = torch.zeros(c, self.d).index_add_(0, ids[:, gi], xn[:, gi])
                cnt = torch.bincount(ids[:, gi], minlength=c).unsqueeze(1)
                hit = cnt[:, 0] > 0
                self.codebook[gi, hit] = sums[hit] / cnt[hit]
