"""Cross-layer transcoders (CLTs): an encoder per layer, decoders to it and every later layer.

Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language Models"
(transformer-circuits.pub/2025/attribution-graphs/methods.html); Lindsey et al. 2024, "Sparse
Crosscoders" (transformer-circuits.pub). For layers l = l_0 .. l_0 + n - 1 (`cfg.clt_layers`,
contiguous), with x_l the MLP input of layer l (`hook_name` with "{layer}") and y_m its MLP output
(`hook_name_out`):

    a_l   = act(W_enc^l x_l + b_enc^l)                                    [F] per layer
    ŷ_m   = sum_{l <= m} W_dec^{l->m} a_l + b_dec^m                       [d] per output layer
    loss  = sum_m ||y_m - ŷ_m||^2  (+ the activation's sparsity term)     (mean over rows)

`act` is `cfg.clt_activation`: TopK (k per layer and token; Gao et al., arXiv 2406.04093),
BatchTopK (k * batch per layer, a JumpReLU with a learned threshold per layer at inference;
Bussmann et al., arXiv 2412.06410) or JumpReLU (a threshold per latent, straight-through
pseudo-derivatives; Rajamanoharan et al., arXiv 2407.14435), reusing those modules' code.

Shapes: `d_sae` is the number of latents of all layers together (F = d_sae / n per layer), so
the trainer's per-latent counters work unchanged. Each layer's weights are their own
parameters, in circuit-tracer's layout: `encoders[l]` [F, d_in], `enc_biases[l]` [F],
`decoders[l]` [F, n - l, d_out] (to layers l, l + 1, ..); `b_dec` [n * d_out]. (Separate
tensors, not slices of one: a slice's gradient would be a zero-filled full-size tensor per
layer.) `enc_weight` / `b_enc` are the encoders stacked [d_sae, ..], read-only. A training batch is
every layer's input concatenated [batch, n * d_in] and every layer's output [batch, n * d_out]
(`data_hooks`). Unit-norm decoders (TopK, BatchTopK, JumpReLU with the L0 penalty) normalise
each latent's decoder over all the layers it writes to.

The top-k activations train on the sparse kernels (`saes.kernels`): after the selection no
dense [batch, F] tensor exists, and each layer's decoder is one `SparseDecode` over its
[F, (n - l) d] block; `decode` is sparse too. Both are tested against the dense computation
(`dense_training_loss`, `decode_dense`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import ConfigError
from saes.architectures.jumprelu import SPARSITY_MODES, JumpReLUFunction, StepFunction
from saes.base import LossOutput, SAEConfig, SparseDictionary
from saes.kernels import (SampledLinear, SparseCode, SparseDecode, native_lowp_dtype,
                          reused, row_offsets, select_batch_topk, select_topk_exact,
                          select_topk_lowp)

ACTIVATIONS = ("topk", "batchtopk", "jumprelu")


def check_clt_config(cfg: SAEConfig) -> None:
    """Refuse a CLT config that cannot work, saying how to fix it."""
    layers = cfg.clt_layers
    if not layers:
        raise ConfigError("A cross-layer transcoder needs clt_layers (e.g. --layers 0-3).")
    if list(layers) != list(range(layers[0], layers[0] + len(layers))):
        raise ConfigError(f"clt_layers must be contiguous and ascending, got {list(layers)}.")
    if cfg.clt_activation not in ACTIVATIONS:
        raise ConfigError(f"clt_activation must be one of {list(ACTIVATIONS)}, got "
                          f"{cfg.clt_activation!r}.")
    if cfg.d_sae % len(layers):
        raise ConfigError(f"d_sae ({cfg.d_sae}) counts the latents of all {len(layers)} layers "
                          "and must be divisible by their number.")
    if not cfg.transcoder or cfg.skip:
        raise ConfigError("A cross-layer transcoder needs transcoder=True and no skip path.")
    for name in ("hook_name", "hook_name_out"):
        if "{layer}" not in getattr(cfg, name):
            raise ConfigError(f"{name} of a cross-layer transcoder is a template with "
                              f"'{{layer}}', e.g. 'blocks.{{layer}}.ln2.hook_normalized'; got "
                              f"{getattr(cfg, name)!r}.")
    if cfg.clt_activation == "jumprelu" and cfg.jumprelu_sparsity not in SPARSITY_MODES:
        raise ConfigError(f"jumprelu_sparsity must be one of {list(SPARSITY_MODES)}.")
    if cfg.clt_activation != "jumprelu" and cfg.k > cfg.d_sae // len(layers):
        raise ConfigError(f"k ({cfg.k}) is larger than the {cfg.d_sae // len(layers)} latents "
                          "of a layer.")


class CrossLayerTranscoder(SparseDictionary):
    """A CLT over `cfg.clt_layers`; see the module docstring for the shapes."""

    architecture = "clt"
    options = ("k", "l0_coefficient", "jumprelu_sparsity", "jumprelu_tanh_scale",
               "jumprelu_bandwidth", "jumprelu_init_threshold", "clt_layers", "clt_activation")
    threshold_beta = 0.999  # BatchTopK's running mean of the smallest kept activation
    single_hook = False  # every layer's input -> every layer's output
    save_format = "circuit-tracer-clt"  # saes.formats.clt

    def __init__(self, cfg: SAEConfig):
        nn.Module.__init__(self)
        check_clt_config(cfg)
        self.cfg = cfg
        dt = getattr(torch, cfg.dtype)
        n = self.n_layers = len(cfg.clt_layers)
        self.n_latents = cfg.d_sae // n  # F: latents per layer
        self.d_in, self.d_out = cfg.d_in, cfg.out_dim
        f = self.n_latents
        self.encoders = nn.ParameterList(
            [nn.Parameter(torch.zeros(f, self.d_in, dtype=dt)) for _ in range(n)])
        self.enc_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(f, dtype=dt)) for _ in range(n)])
        self.decoders = nn.ParameterList(
            [nn.Parameter(torch.zeros(f, n - i, self.d_out, dtype=dt)) for i in range(n)])
        self.b_dec = nn.Parameter(torch.zeros(n * self.d_out, dtype=dt))
        self.W_skip = None
        if cfg.clt_activation == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full(
                (cfg.d_sae,), math.log(cfg.jumprelu_init_threshold), dtype=dt))
        elif cfg.clt_activation == "batchtopk":
            self.register_buffer("threshold", torch.full((n,), -1.0, dtype=dt))

    # ----------------------------------------------------------------- layout
    @classmethod
    def data_hooks(cls, cfg):
        return (tuple(cfg.hook_name.format(layer=i) for i in cfg.clt_layers),
                tuple(cfg.hook_name_out.format(layer=i) for i in cfg.clt_layers))

    @property
    def layers(self) -> tuple[int, ...]:
        return self.cfg.clt_layers

    def decoder(self, i: int) -> Float[Tensor, "F n_out d_out"]:
        """Layer index i's decoder to layers i, i + 1, .. (indices into `layers`)."""
        return self.decoders[i]

    def encoder(self, i: int) -> tuple[Float[Tensor, "F d_in"], Float[Tensor, " F"]]:
        return self.encoders[i], self.enc_biases[i]

    @property
    def enc_weight(self) -> Float[Tensor, "d_sae d_in"]:
        return torch.cat(list(self.encoders))

    @property
    def b_enc(self) -> Float[Tensor, " d_sae"]:
        return torch.cat(list(self.enc_biases))

    def b_dec_layer(self, i: int) -> Float[Tensor, " d_out"]:
        return self.b_dec[i * self.d_out:(i + 1) * self.d_out]

    @property
    def jump_threshold(self) -> Float[Tensor, "n F"] | None:
        """The inference threshold per latent (JumpReLU, BatchTopK), None for TopK."""
        n, f = self.n_layers, self.n_latents
        if self.cfg.clt_activation == "jumprelu":
            return self.log_threshold.exp().view(n, f)
        if self.cfg.clt_activation == "batchtopk":
            return self.threshold.clamp_min(0)[:, None].expand(n, f)
        return None

    # ----------------------------------------------------------------- weights
    @torch.no_grad()
    def initialise(self, seed: int = 0) -> CrossLayerTranscoder:
        """Each latent's decoder (over every layer it writes to) a random unit vector; its
        encoder the unit-norm direction of its own layer's decoder slice."""
        g = torch.Generator().manual_seed(seed)
        for i in range(self.n_layers):
            w = torch.randn(self.n_latents, self.n_layers - i, self.d_out, generator=g)
            w = w / w.flatten(1).norm(dim=1)[:, None, None]
            self.decoder(i).copy_(w)
            enc, _ = self.encoder(i)
            if self.d_in == self.d_out:
                enc.copy_(w[:, 0] / w[:, 0].norm(dim=1, keepdim=True).clamp_min(1e-8))
            else:
                enc.copy_(torch.randn(self.n_latents, self.d_in, generator=g) / self.d_in ** 0.5)
        return self

    @property
    def unit_norm_decoder(self) -> bool:
        return self.cfg.clt_activation != "jumprelu" or self.cfg.jumprelu_sparsity == "step"

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        for w in self.decoders:
            flat = w.view(self.n_latents, -1)
            flat.div_(flat.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        for w in self.decoders:
            if w.grad is None:
                continue
            w_, g = w.view(self.n_latents, -1), w.grad.view(self.n_latents, -1)
            g.addcmul_(torch.linalg.vecdot(g, w_).unsqueeze(1), w_, value=-1)

    @torch.no_grad()
    def fold_scaling(self, scale_in: float, scale_out: float) -> None:
        """Trained on scale_in * x -> scale_out * y: fold both into the weights."""
        for e in self.encoders:
            e.mul_(scale_in)
        for w in self.decoders:
            w.div_(scale_out)
        self.b_dec.div_(scale_out)

    def decoder_norms(self) -> Float[Tensor, " d_sae"]:
        """||W_dec_j|| over every layer latent j writes to."""
        return torch.cat([w.flatten(1).norm(dim=1) for w in self.decoders])

    # ----------------------------------------------------------------- inference
    def pre_acts(self, x: Float[Tensor, "... n d_in"]) -> Float[Tensor, "... n F"]:
        enc, b = torch.stack(list(self.encoders)), torch.stack(list(self.enc_biases))
        return torch.einsum("...ld,lfd->...lf", x, enc) + b

    def layer_pre_acts(self, i: int, u: Float[Tensor, "... d_in"]) -> Float[Tensor, "... F"]:
        """Pre-activations of layer index i's latents from its input alone."""
        enc, b = self.encoder(i)
        return F.linear(u, enc, b)

    def activate(self, i: int | None, pre: Tensor) -> Tensor:
        """The inference activation of pre-activations [..., F] of layer index i (None: [...,
        n, F], every layer)."""
        act = self.cfg.clt_activation
        if act == "topk":
            vals, idx = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
        thr = self.jump_threshold if i is None else self.jump_threshold[i]
        return F.relu(pre) * (pre > thr).to(pre.dtype)

    def encode(self, x: Float[Tensor, "... n d_in"]) -> Float[Tensor, "... n F"]:
        return self.activate(None, self.pre_acts(x))

    def encode_layer(self, i: int, u: Float[Tensor, "... d_in"]) -> Float[Tensor, "... F"]:
        return self.activate(i, self.layer_pre_acts(i, u))

    def decode(self, acts: Float[Tensor, "... n F"], x: Tensor | None = None
               ) -> Float[Tensor, "... n d_out"]:
        """ŷ_m = sum_{l <= m} W_dec^{l->m} a_l + b_dec^m over the non-zero activations only
        (one `embedding_bag` per source layer)."""
        n, f, d = self.n_layers, self.n_latents, self.d_out
        lead = acts.shape[:-2]
        a = acts.reshape(-1, n, f)
        B = a.shape[0]
        parts = []
        for i in range(n):
            rows, cols = a[:, i].nonzero(as_tuple=True)
            y = F.embedding_bag(cols, self.decoder(i).reshape(f, -1), row_offsets(rows, B),
                                mode="sum", per_sample_weights=a[rows, i, cols])
            parts.append(y.view(B, n - i, d))
        return self._assemble(parts).reshape(*lead, n, d)

    def decode_dense(self, acts: Float[Tensor, "... n F"]) -> Float[Tensor, "... n d_out"]:
        """`decode` as dense matmuls (the reference the sparse path is tested against)."""
        n, f, d = self.n_layers, self.n_latents, self.d_out
        lead = acts.shape[:-2]
        a = acts.reshape(-1, n, f)
        parts = [torch.einsum("bf,fjd->bjd", a[:, i], self.decoder(i)) for i in range(n)]
        return self._assemble(parts).reshape(*lead, n, d)

    def _assemble(self, parts: list[Tensor]) -> Tensor:
        """[B, n, d]: output layer m is b_dec^m + sum_{l <= m} parts[l][:, m - l]."""
        out = []
        for m in range(self.n_layers):
            y = self.b_dec_layer(m)
            for i in range(m + 1):
                y = y + parts[i][:, m - i]
            out.append(y)
        return torch.stack(out, 1)

    def forward(self, x: Float[Tensor, "... n d_in"]) -> Float[Tensor, "... n d_out"]:
        return self.decode(self.encode(x))

    # ----------------------------------------------------------------- training
    def training_loss(self, x, target, dead=None, sparsity_scale=1.0) -> LossOutput:
        """Rows are every layer's input [B, n d_in] and output [B, n d_out] concatenated."""
        if self.cfg.clt_activation == "jumprelu":
            return self._jumprelu_loss(x, target, sparsity_scale)
        B, n, f = x.shape[0], self.n_layers, self.n_latents
        xs = x.view(B, n, self.d_in)
        parts, fired, active = [], [], x.new_zeros(())
        smallest = []
        for i in range(n):
            enc, b = self.encoder(i)
            xi = xs[:, i].contiguous()
            code, vals = self._select(xi, enc, b)
            cols = code.cols
            acts = F.relu(SampledLinear.apply(xi, enc, b, None, code, vals))
            parts.append(SparseDecode.apply(acts, self.decoder(i).reshape(f, -1), code)
                         .view(B, n - i, self.d_out))
            with torch.no_grad():
                on = acts > 0
                fired.append(torch.zeros(f, device=x.device).index_add_(
                    0, cols, on.to(torch.float32)) > 0)
                active = active + on.sum()
                smallest.append(acts.masked_fill(~on, float("inf")).min())
        recon = self._assemble(parts)
        mse = (target.view(B, n, self.d_out) - recon).pow(2).sum(-1).sum(-1).mean()
        if self.cfg.clt_activation == "batchtopk":
            self._update_threshold(torch.stack(smallest))
        return LossOutput(loss=mse, recon=recon.detach().reshape(B, -1), fired=torch.cat(fired),
                          l0=active / B, parts={"mse": mse.detach()})

    #: dtype of the top-k selecting matmul (the winners' values are then recomputed exactly):
    #: "auto" is bf16 where the hardware multiplies it natively (as `TopKSAE`), else fp32
    select_dtype: torch.dtype | str | None = "auto"

    @torch.no_grad()
    def _select(self, xi: Tensor, enc: Tensor, b: Tensor) -> tuple[SparseCode, Tensor]:
        """One layer's code and its exact pre-activation values. TopK: the selecting matmul
        into a [batch, F] buffer reused by every layer and step and a grouped top-k (or the
        matmul in bf16 in cache-sized row chunks where bf16 is native); BatchTopK: the top
        k * batch of the layer's whole [batch, F]."""
        f, k = self.n_latents, self.cfg.k
        dtype = self.select_dtype
        if dtype == "auto":
            dtype = native_lowp_dtype(xi.device)
        topk = self.cfg.clt_activation == "topk"
        if topk and dtype is not None and dtype != xi.dtype:
            return select_topk_lowp(xi, enc, b, k, dtype=dtype)
        buf = reused(self.scratch, "pre", (xi.shape[0], f), xi)
        if topk:
            return select_topk_exact(xi, enc, b, k, out=buf)
        rows, cols, vals, offsets = select_batch_topk(torch.addmm(b, xi, enc.T, out=buf), k)
        return SparseCode(rows, cols, offsets, f), vals

    @torch.no_grad()
    def _update_threshold(self, smallest: Tensor) -> None:
        """Per layer, a running mean of the smallest kept activation (the first taken as is)."""
        thr = self.threshold
        ok = torch.isfinite(smallest)
        new = torch.where(thr < 0, smallest, torch.lerp(thr, smallest, 1 - self.threshold_beta))
        self.threshold.copy_(torch.where(ok, new, thr))

    def _jumprelu_loss(self, x, target, sparsity_scale) -> LossOutput:
        B, n = x.shape[0], self.n_layers
        pre = self.pre_acts(x.view(B, n, self.d_in)).reshape(B, -1)  # [B, d_sae]
        theta, eps = self.log_threshold.exp(), self.cfg.jumprelu_bandwidth
        acts = JumpReLUFunction.apply(pre, theta, eps)
        recon = self.decode_dense(acts.view(B, n, self.n_latents))
        mse = (target.view(B, n, self.d_out) - recon).pow(2).sum(-1).sum(-1).mean()
        if self.cfg.jumprelu_sparsity == "step":
            penalty = StepFunction.apply(pre, theta, eps).sum(-1).mean()
        else:
            scaled = self.cfg.jumprelu_tanh_scale * acts * self.decoder_norms()
            penalty = torch.tanh(scaled).sum(-1).mean()
        loss = mse + sparsity_scale * self.cfg.l0_coefficient * penalty
        on = acts > 0
        return LossOutput(loss=loss, recon=recon.detach().reshape(B, -1), fired=on.any(0),
                          l0=on.sum(-1).float().mean(),
                          parts={"mse": mse.detach(), "sparsity": penalty.detach()})

    def dense_training_loss(self, x, target) -> Tensor:
        """The reconstruction loss of a top-k CLT computed densely (no sparse kernels): the
        reference `training_loss` is tested against, values and gradients."""
        B, n, f = x.shape[0], self.n_layers, self.n_latents
        pre = self.pre_acts(x.view(B, n, self.d_in))  # [B, n, F]
        if self.cfg.clt_activation == "topk":
            vals, idx = pre.topk(self.cfg.k, dim=-1)
            acts = torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
        else:  # batch top-k per layer: k * B largest of the layer's [B, F]
            per = pre.transpose(0, 1).reshape(n, -1)
            vals, idx = per.topk(self.cfg.k * B, dim=-1)
            acts = torch.zeros_like(per).scatter(-1, idx, F.relu(vals))
            acts = acts.view(n, B, f).transpose(0, 1)
        recon = self.decode_dense(acts)
        return (target.view(B, n, self.d_out) - recon).pow(2).sum(-1).sum(-1).mean()

    def step_memory(self, batch, device):
        """The selecting matmul [batch, F] per layer and the codes (top-k), or the dense
        autograd tensors over every latent (JumpReLU), plus the reconstruction and its error."""
        c, n = self.cfg, self.n_layers
        recon = 3 * batch * n * self.d_out * 4 + 2 * batch * n * self.d_in * 4
        if c.clt_activation == "jumprelu":
            return {"buffers": 0, "step": int(7.5 * batch * c.d_sae * 4) + recon}
        select = batch * self.n_latents * 4 * (5 if c.clt_activation == "batchtopk" else 1)
        return {"buffers": 0, "step": select + 48 * batch * c.k * n + recon}

    # ----------------------------------------------------------------- export
    def saelens_architecture(self) -> str:
        raise NotImplementedError(
            "SAELens cannot train or save cross-layer transcoders in its own layout; a CLT is "
            "saved in circuit-tracer's layout (saes.formats.clt.save_clt).")
