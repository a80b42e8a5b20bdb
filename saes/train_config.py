"""What a training run is: `TrainConfig` (the optimisation; the data is a `saes.data.DataConfig`
beside it), its learning-rate schedule, and reading the configs of older runs. The trainer that
runs one is `saes.train.Trainer` (which re-exports these)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from interp.config import Config
from interp.devices import check_device, check_dtype
from interp.errors import ConfigError
from saes.base import SAEConfig
from saes.data import DataConfig


@dataclass(frozen=True)
class TrainConfig(Config):
    """How a dictionary is optimised (its data is a `saes.data.DataConfig` beside it); with the
    data config, `run.json` holds everything a run depends on, so a run can be redone."""

    sae: SAEConfig = field(default_factory=SAEConfig)
    total_tokens: int = 1_000_000
    batch_size: int = 4096
    lr: float = 4e-3  # Adam; best held-out FVU at 4608 latents, batch 4096 (benchmarks/sae_train.py)
    lr_warmup_steps: int = 0
    lr_decay: str = "none"  # none | linear | cosine (over the last `lr_decay_fraction`)
    lr_decay_fraction: float = 0.2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    sparsity_warmup_steps: int = 0  # linear warm-up of the sparsity coefficient
    dead_tokens: int = 1_000_000  # a latent that has not fired for this many tokens is dead
    normalise: bool = True  # scale inputs (and targets) to mean norm sqrt(d); folded at save
    b_dec_init: str = "mean"  # mean | zeros
    seed: int = 0  # initialisation
    checkpoint_every: int = 500  # steps; 0: only at the end and on interrupt
    log_every: int = 10
    bf16: bool = False  # the older spelling of autocast="bfloat16" (folded into it)
    # clip the global gradient norm to this before each Adam step (0: off). SAELens's trainer
    # always clips at 1.0; for the standard (L1) SAE that is what makes its code sparse fast:
    # without it the L1 gradient shrinks with the loss and Adam's long second-moment memory
    # damps the late steps (benchmark tensor, 500k tokens: FVU 0.39 at L0 104 unclipped,
    # 0.34 at L0 61 clipped, as SAELens's 0.34 at L0 64)
    max_grad_norm: float = 0.0
    device: str = "auto"  # where the dictionary trains: auto | cpu | cuda[:N] | mps
    # the step's compute dtype, master weights and Adam state staying fp32: float32 (off) |
    # bfloat16 | float16 (with loss scaling) | auto (the device's native low precision). An
    # architecture with its own low-precision kernels uses them (standard: every dense matmul;
    # top-k family: the selecting matmul, values recomputed exactly); others autocast the step
    autocast: str = "float32"

    def __post_init__(self):
        if isinstance(self.sae, dict):
            object.__setattr__(self, "sae", SAEConfig.from_dict(self.sae))
        object.__setattr__(self, "device", check_device(self.device))
        autocast = check_dtype(self.autocast)
        if self.bf16:  # one spelling in the config, so old and new configs compare equal
            if autocast not in ("float32", "bfloat16"):
                raise ConfigError(f"bf16=True asks for bfloat16 but autocast={autocast!r}; "
                                  "give autocast alone.")
            autocast = "bfloat16"
            object.__setattr__(self, "bf16", False)
        object.__setattr__(self, "autocast", autocast)
        if self.lr_decay not in ("none", "linear", "cosine"):
            raise ConfigError(f"lr_decay must be none, linear or cosine, not {self.lr_decay!r}.")
        if self.b_dec_init not in ("mean", "zeros"):
            raise ConfigError(f"b_dec_init must be mean or zeros, not {self.b_dec_init!r}.")
        if not (math.isfinite(self.lr) and self.lr >= 0 and math.isfinite(self.max_grad_norm)):
            raise ConfigError(f"lr ({self.lr}) must be a finite number >= 0, and max_grad_norm "
                              f"({self.max_grad_norm}) finite.")
        if self.batch_size < 1 or self.total_tokens < self.batch_size:
            raise ConfigError("Need batch_size >= 1 and total_tokens >= batch_size.")

    @property
    def total_steps(self) -> int:
        return self.total_tokens // self.batch_size

    def identity(self) -> TrainConfig:
        """The config less where it runs: what a resumed run must agree on (a run may move to
        another device)."""
        return dataclasses.replace(self, device="auto")


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the base learning rate at `step` (warm-up, then optional decay)."""
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_decay == "none":
        return 1.0
    start = int(cfg.total_steps * (1 - cfg.lr_decay_fraction))
    if step < start:
        return 1.0
    t = (step - start) / max(1, cfg.total_steps - start)
    return 1 - t if cfg.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * t))


#: keys of configs written before the data seam, when TrainConfig also named its data
_LEGACY_DATA_KEYS = ("activations", "model", "holdout_every", "shuffle_buffer_rows")


def split_config(d: dict) -> tuple[TrainConfig, DataConfig | None]:
    """(TrainConfig, DataConfig) from a run's or checkpoint's config: `{**train, "data": data}`,
    or the older flat form whose TrainConfig held the data keys (its seed seeded both)."""
    d = dict(d)
    data = d.pop("data", None)
    legacy = {k: d.pop(k) for k in _LEGACY_DATA_KEYS if k in d}
    if legacy and data is None:
        data = {**legacy, "seed": d.get("seed", 0)}
    return TrainConfig.from_dict(d), (DataConfig.from_dict(data) if data is not None else None)
