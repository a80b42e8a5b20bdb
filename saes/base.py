"""Sparse dictionaries: the shared config and the base module.

Every architecture (SAE, transcoder, skip-transcoder) is `x -> encode -> acts -> decode -> y`:

    pre  = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc     [.., d_sae]
    acts = activation(pre)                                               (per architecture)
    y    = acts @ W_dec + b_dec (+ x @ W_skip.T for skip-transcoders)     [.., d_out]

The encoder is stored as `enc_weight` [d_sae, d_in] (the layout the sparse kernels want);
`W_enc` is its transpose, as in SAELens. An architecture is one module defining a subclass
(its `architecture` names it) and one line in the registry, `saes.architectures.ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.config import Config
from interp.errors import ConfigError


@dataclass(frozen=True)
class SAEConfig(Config):
    """Shape and sparsity settings of a sparse dictionary; other fields are ignored by
    architectures that do not use them."""

    architecture: str = "topk"
    d_in: int = 576
    d_sae: int = 4608
    d_out: int | None = None  # transcoders: width of the output (None: d_in)
    transcoder: bool = False  # maps hook_name -> hook_name_out; no b_dec subtraction
    skip: bool = False  # skip-transcoder: adds a linear skip connection x @ W_skip.T
    k: int = 32  # topk / batchtopk / matryoshka_batchtopk
    l1_coefficient: float = 5.0  # standard / gated
    l0_coefficient: float = 1.0  # jumprelu (sparsity penalty weight)
    jumprelu_sparsity: str = "step"  # "step" (L0 via straight-through) | "tanh"
    jumprelu_tanh_scale: float = 4.0
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    matryoshka_widths: tuple[int, ...] = ()  # nested prefix widths; d_sae is added last
    aux_k: int = 512  # topk family: latents used by the AuxK loss on dead latents
    aux_coefficient: float = 1 / 32
    # cross-layer transcoder ("clt"): the layers with an encoder (contiguous; each writes to
    # itself and every later one), the activation (topk | batchtopk | jumprelu), and hook_name /
    # hook_name_out are templates with "{layer}"; d_sae counts the latents of all layers
    clt_layers: tuple[int, ...] = ()
    clt_activation: str = "topk"
    hook_name: str = ""
    hook_name_out: str = ""
    model_name: str = ""
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "matryoshka_widths", tuple(self.matryoshka_widths))
        object.__setattr__(self, "clt_layers", tuple(int(i) for i in self.clt_layers))
        if self.d_in < 1 or self.d_sae < 1:
            raise ConfigError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}.")
        if self.skip and not self.transcoder:
            raise ConfigError("skip=True needs transcoder=True (a skip connection maps the input "
                              "hook to the output hook).")

    @property
    def out_dim(self) -> int:
        return self.d_out or self.d_in

    @property
    def apply_b_dec_to_input(self) -> bool:
        return not self.transcoder


@dataclass
class LossOutput:
    """What one training step needs from an architecture."""

    loss: Tensor
    recon: Tensor  # [batch, d_out]
    fired: Tensor  # [d_sae] bool: latents active anywhere in the batch
    l0: Tensor  # scalar: mean active latents per row
    parts: dict[str, Tensor]  # named loss terms, for logging


class SparseDictionary(nn.Module):
    """Base class: parameters, decoding, normalisation folding and export hooks."""

    architecture: ClassVar[str] = "base"
    #: the architecture-specific SAEConfig fields it reads (another one's setting is an error)
    options: ClassVar[tuple[str, ...]] = ()
    #: trained with unit-norm decoder rows (the trainer renormalises after each step);
    #: an architecture may make it a property of its config
    unit_norm_decoder: bool = True
    #: [batch, d_sae] float tensors an autograd training step holds at its peak (saved
    #: activations and the backward's temporaries), for the memory estimate (`step_memory`)
    step_dense_tensors: ClassVar[float] = 6.0
    #: maps one hook to one hook, so `saes.evaluate` can score it and splice it into the model
    #: (a cross-layer transcoder maps every layer's input to every layer's output: it is not)
    single_hook: ClassVar[bool] = True
    #: the format a training run saves it in (`saes.train.SAVERS`)
    save_format: ClassVar[str] = "saelens"

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        dt = getattr(torch, cfg.dtype)
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.out_dim
        self.enc_weight = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dt))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dt))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_out, dtype=dt))
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=dt))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(d_out, d_in, dtype=dt))
        else:
            self.W_skip = None

    @classmethod
    def data_hooks(cls, cfg: SAEConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(input hooks, target hooks) a training batch is read from; several hooks are
        concatenated along the feature dimension (a cross-layer transcoder's layers)."""
        return (cfg.hook_name,), (cfg.hook_name_out if cfg.transcoder else cfg.hook_name,)

    @property
    def scratch(self) -> dict[str, Tensor]:
        """Buffers a training step reuses across steps (`saes.kernels.reused`); not state:
        dropped on copy and pickling."""
        return self.__dict__.setdefault("_scratch_bufs", {})

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_scratch_bufs", None)
        return state

    # ----------------------------------------------------------------- weights
    @property
    def W_enc(self) -> Tensor:
        """[d_in, d_sae], the SAELens layout."""
        return self.enc_weight.T

    @torch.no_grad()
    def initialise(self, seed: int = 0) -> SparseDictionary:
        """Unit-norm random decoder rows; encoder tied to the decoder's transpose when the
        widths allow (the usual SAE init), else scaled Gaussian."""
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(self.cfg.d_sae, self.cfg.out_dim, generator=g, dtype=torch.float32)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        if self.cfg.out_dim == self.cfg.d_in:
            self.enc_weight.copy_(w)
        else:
            self.enc_weight.copy_(torch.randn(self.cfg.d_sae, self.cfg.d_in, generator=g)
                                  / self.cfg.d_in ** 0.5)
        return self

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Scale decoder rows to unit norm (the constraint most architectures train under)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component parallel to each (unit) decoder row, so a step
        does not fight the norm constraint."""
        if self.W_dec.grad is None:
            return
        w, g = self.W_dec, self.W_dec.grad
        g.sub_((g * w).sum(dim=1, keepdim=True) * w)

    @torch.no_grad()
    def fold_scaling(self, scale_in: float, scale_out: float) -> None:
        """Fold input/output normalisation into the weights.

        Trained on x' = scale_in * x with targets y' = scale_out * y; afterwards the module maps
        raw x to raw y with the same latent activations.
        """
        self.enc_weight.mul_(scale_in)
        if self.cfg.apply_b_dec_to_input and scale_in != scale_out:
            raise ConfigError("An SAE (not a transcoder) has one normalisation scale: scale_in "
                              f"({scale_in}) must equal scale_out ({scale_out}).")
        self.W_dec.div_(scale_out)
        self.b_dec.div_(scale_out)
        if self.W_skip is not None:
            self.W_skip.mul_(scale_in / scale_out)

    # ----------------------------------------------------------------- forward
    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return nn.functional.linear(x, self.enc_weight, self.b_enc)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        raise NotImplementedError

    def decode(self, acts: Float[Tensor, "... d_sae"], x: Tensor | None = None
               ) -> Float[Tensor, "... d_out"]:
        y = acts @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("A skip-transcoder's decode needs the input x.")
            y = y + x @ self.W_skip.T
        return y

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return self.decode(self.encode(x), x)

    def training_loss(self, x: Tensor, target: Tensor, dead: Tensor | None = None,
                      sparsity_scale: float = 1.0) -> LossOutput:
        """Loss of one batch: reconstruction MSE (summed over d, mean over rows) plus the
        architecture's sparsity terms times `sparsity_scale` (the trainer's warm-up, in [0, 1]).
        `dead` is a [d_sae] bool mask of dead latents (used by AuxK)."""
        raise NotImplementedError

    def use_lowp(self, dtype: torch.dtype) -> bool:
        """Switch the architecture's own low-precision kernels to `dtype` for training, if it
        has any (standard: every dense matmul; top-k family: the selecting matmul, the values
        recomputed exactly); False if it has none, and the trainer autocasts its step."""
        return False

    def step_memory(self, batch: int, device: torch.device) -> dict[str, int]:
        """Bytes a training step on `batch` rows needs beyond the weights, gradients and Adam
        state: {"buffers": kept from one step to the next, "step": alive only at the step's
        peak} (`saes.memory`). The default counts `step_dense_tensors` float32 [batch, d_sae]
        tensors and the reconstruction, its error and their gradient."""
        c = self.cfg
        return {"buffers": 0, "step": int(self.step_dense_tensors * batch * c.d_sae * 4
                                           + 3 * batch * c.out_dim * 4)}

    def _skip(self, x: Tensor) -> Tensor | float:
        return x @ self.W_skip.T if self.W_skip is not None else 0.0

    # ----------------------------------------------------------------- export
    def saelens_architecture(self) -> str:
        """The SAELens inference architecture this module is saved as."""
        base = self.architecture
        if self.cfg.transcoder:
            base = {"standard": "transcoder", "jumprelu": "jumprelu_transcoder"}.get(base, base)
            if self.cfg.skip:
                base = {"transcoder": "skip_transcoder",
                        "jumprelu_transcoder": "jumprelu_skip_transcoder"}.get(base, base)
        return base

    def saelens_tensors(self) -> dict[str, Tensor]:
        """State dict in SAELens's exact names and shapes (override to add/convert)."""
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.W_skip is not None:
            out["W_skip"] = self.W_skip
        return {k: v.detach().contiguous() for k, v in out.items()}

    def saelens_extra_cfg(self) -> dict[str, Any]:
        return {}

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        """The inverse of `saelens_tensors` (names and shapes already checked)."""
        self.enc_weight.copy_(tensors["W_enc"].T)
        for name in ("b_enc", "W_dec", "b_dec", "W_skip"):
            if name in tensors:
                getattr(self, name).copy_(tensors[name])
