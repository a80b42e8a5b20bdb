"""Training sparse dictionaries (SAEs, transcoders) from any batch source (`saes.data`: an
activation store, a live model, tensors in memory).

One loop serves every architecture: Adam with warm-up and decay, sparsity-coefficient warm-up,
dead-latent tracking (fed to the AuxK loss of the top-k family), unit-norm decoders where the
architecture trains with them, activation normalisation estimated first and folded into the
weights at save time. Checkpoints hold everything a step depends on (weights, Adam moments,
counters, the reader's batch index), so a resumed run continues bit-exactly; SIGINT/SIGTERM
write one before exiting. Under `torchrun` it is data parallel (gloo on CPU, nccl on GPU): every
rank reads the same shuffled global batch and trains on its own slice of rows. `TrainConfig`
holds the optimisation only; where the data comes from is the source's business.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError
from saes.architectures import create_sae
from saes.base import SAEConfig, SparseDictionary
from saes.checkpoint import read_checkpoint, read_meta, recover, write_checkpoint
from saes.data import BatchSource, DataConfig, as_source
from saes.distributed import (all_reduce_grads, all_reduce_max, dist_info, install_signals,
                              restore_signals)

log = logging.getLogger(__name__)


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
    bf16: bool = False  # bf16 matmuls in training (master weights and Adam stay fp32)
    # clip the global gradient norm to this before each Adam step (0: off). SAELens's trainer
    # always clips at 1.0; for the standard (L1) SAE that is what makes its code sparse fast:
    # without it the L1 gradient shrinks with the loss and Adam's long second-moment memory
    # damps the late steps (benchmark tensor, 500k tokens: FVU 0.39 at L0 104 unclipped,
    # 0.34 at L0 61 clipped, as SAELens's 0.34 at L0 64)
    max_grad_norm: float = 0.0

    def __post_init__(self):
        if isinstance(self.sae, dict):
            object.__setattr__(self, "sae", SAEConfig.from_dict(self.sae))
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


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Train one dictionary into `run_dir` (resuming a checkpoint there if present).

    `data` is where batches come from: a `DataConfig` (a store or a model), any
    `saes.data.BatchSource`, or tensors in memory (one tensor, or {hook: tensor}). The source
    must give the same batch for the same index, or resuming is not exact.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path,
                 data: DataConfig | BatchSource | Tensor | dict, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.data = data.to_dict() if isinstance(data, DataConfig) else None  # for checkpoints
        self._data, self._source = data, None
        self.hooks = [cfg.sae.hook_name] + ([cfg.sae.hook_name_out] if cfg.sae.transcoder else [])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.world, self.rank = dist_info()
        if cfg.batch_size % self.world:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the "
                              f"{self.world} processes.")
        self.sae: SparseDictionary = create_sae(cfg.sae, seed=cfg.seed)
        self.opt = _adam(self.sae, cfg)
        self._autocast = cfg.bf16 and not _lowp_matmuls(self.sae, torch.bfloat16)
        self.step = 0
        self.scale_in = self.scale_out = 1.0
        self.since_fired = torch.zeros(cfg.sae.d_sae, dtype=torch.long)  # tokens since it fired
        self.fired_count = torch.zeros(cfg.sae.d_sae, dtype=torch.long)
        self._stop = False  # a signal arrived here
        self._stop_now = False  # stop after this step: `_stop` on any rank, decided together
        ck = self.run_dir / "checkpoint"
        if self.rank == 0:
            recover(ck)  # finish a checkpoint swap that a kill interrupted
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        if (ck / "trainer.json").is_file():
            self._load_checkpoint()
            self.resumed = True
        else:
            self.resumed = False

    # ----------------------------------------------------------------- setup
    @property
    def source(self) -> BatchSource:
        """The batch source (opened on first use; `train_many` hands its trainers one)."""
        if self._source is None:
            self._source = as_source(self._data)
        return self._source

    @source.setter
    def source(self, source: BatchSource) -> None:
        self._source = source

    def _open_batches(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(input, target) global batches from batch index `start` on."""
        hin, hout = self.hooks[0], self.hooks[-1]
        for b in self.source.batches(self.hooks, self.cfg.batch_size, start,
                                     n_batches=self.cfg.total_steps):
            yield b[hin].float(), b[hout].float()

    def _initialise_from_data(self) -> None:
        """Estimate normalisation scales and the decoder bias from the first batches."""
        xs, ys = [], []
        probe = self._open_batches(0)
        for _ in range(min(8, max(1, self.cfg.total_steps))):
            x, y = next(probe)
            xs.append(x)
            ys.append(y)
        x, y = torch.cat(xs), torch.cat(ys)
        if self.cfg.normalise:
            self.scale_in = float(math.sqrt(x.shape[1]) / x.norm(dim=1).mean())
            self.scale_out = (self.scale_in if self.cfg.sae.apply_b_dec_to_input
                              else float(math.sqrt(y.shape[1]) / y.norm(dim=1).mean()))
        if self.cfg.b_dec_init == "mean":
            with torch.no_grad():
                self.sae.b_dec.copy_((y * self.scale_out).mean(0))

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write `checkpoint/` atomically (rank 0 only)."""
        final = self.run_dir / "checkpoint"
        if self.rank == 0:
            write_checkpoint(final, self.sae, self.opt,
                             {"since_fired": self.since_fired, "fired_count": self.fired_count},
                             {"step": self.step, "scale_in": self.scale_in,
                              "scale_out": self.scale_out, "config": self.cfg.to_dict(),
                              "data": self.data})
        return final

    def _load_checkpoint(self) -> None:
        ck = self.run_dir / "checkpoint"
        meta = read_meta(ck)
        config, data = split_config({**meta["config"], "data": meta.get("data")})
        if config != self.cfg or None not in (data, self.data) and data.to_dict() != self.data:
            raise ConfigError(f"The checkpoint in {ck} was made with another config; resume with "
                              "`interp resume RUN` (which reads it) or use a new run directory.")
        d_sae = self.cfg.sae.d_sae
        meta, extra = read_checkpoint(ck, self.sae, self.opt, {"since_fired": (d_sae,),
                                                              "fired_count": (d_sae,)})
        self.since_fired, self.fired_count = extra["since_fired"], extra["fired_count"]
        self.step, self.scale_in, self.scale_out = meta["step"], meta["scale_in"], meta["scale_out"]

    # ----------------------------------------------------------------- training
    def _on_signal(self, signum, frame):
        log.warning("Signal %s: writing a checkpoint after this step.", signum)
        self._stop = True

    def train(self, stop_after: int | None = None) -> SparseDictionary | None:
        """Run to `total_steps` (from the checkpoint if resumed); returns the trained module
        with normalisation folded in, also saved in SAELens format under `run_dir/sae`.

        `stop_after=n` pauses after n more steps with a checkpoint and returns None (the same
        command resumes it); a SIGINT/SIGTERM does the same and raises KeyboardInterrupt."""
        batches = self._open_batches(self.step)
        end = (self.cfg.total_steps if stop_after is None
               else min(self.cfg.total_steps, self.step + stop_after))
        self.begin()
        try:
            while self.step < end:
                self.step_on(*next(batches))
        finally:
            self.close()
        return self.finish()

    # The loop in pieces, so that several trainers can share one data source (`train_many`).
    def begin(self) -> None:
        """Initialise from data (unless resumed), open the metrics file, catch signals."""
        from tqdm.auto import tqdm

        if not self.resumed:
            self._initialise_from_data()
        self._handlers = install_signals(self._on_signal)
        self._metrics_f = None
        if self.rank == 0:
            _trim_metrics(self.run_dir / "metrics.jsonl", self.step)
            self._metrics_f = open(self.run_dir / "metrics.jsonl", "a")
        self._bar = tqdm(total=self.cfg.total_steps, initial=self.step, unit="step",
                         disable=not self.progress or self.rank != 0,
                         desc=self.cfg.sae.architecture)
        self._clock = (time.perf_counter(), self.step)

    def step_on(self, x: Tensor, y: Tensor):
        """One optimisation step on a global batch of raw (unnormalised) rows."""
        cfg = self.cfg
        lo = self.rank * cfg.batch_size // self.world
        hi = (self.rank + 1) * cfg.batch_size // self.world
        x, y = x[lo:hi], y[lo:hi]
        if self.scale_in != 1.0 or self.scale_out != 1.0:  # (no copies of unscaled batches)
            x, y = x * self.scale_in, y * self.scale_out
        out = self._step(x, y)
        self.step += 1
        self._bar.update(1)
        if self._metrics_f is not None and (self.step % cfg.log_every == 0
                                            or self.step == cfg.total_steps):
            now = time.perf_counter()
            t_last, step_last = self._clock
            rec = self._log_record(out, x, y, (self.step - step_last) * cfg.batch_size
                                   / max(now - t_last, 1e-9))
            self._clock = (now, self.step)
            self._metrics_f.write(json.dumps(rec) + "\n")
            self._metrics_f.flush()
            self._bar.set_postfix(loss=f"{rec['loss']:.4g}", l0=f"{rec['l0']:.1f}",
                                  fvu=f"{rec['fvu']:.3f}", dead=f"{rec['dead_frac']:.2f}")
        if self._stop_now:
            self.save_checkpoint()
            raise KeyboardInterrupt("training interrupted; checkpoint written")
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()
        return out

    def close(self) -> None:
        self._bar.close()
        if self._metrics_f is not None:
            self._metrics_f.close()
        restore_signals(self._handlers)

    def finish(self) -> SparseDictionary | None:
        """Checkpoint; export (and return) the dictionary if training is complete."""
        self.save_checkpoint()
        if self.step < self.cfg.total_steps:
            return None
        return self.export()

    def _step(self, x: Tensor, y: Tensor):
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg, self.step)
        dead = self.since_fired >= cfg.dead_tokens
        sparsity = (min(1.0, (self.step + 1) / cfg.sparsity_warmup_steps)
                    if cfg.sparsity_warmup_steps else 1.0)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            out = self.sae.training_loss(x, y, dead=dead, sparsity_scale=sparsity)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        fired = out.fired
        if self.world > 1:
            all_reduce_grads(self.sae)
            fired, self._stop_now = all_reduce_max(fired, self._stop)
        else:
            self._stop_now = self._stop
        if self.sae.unit_norm_decoder:
            self.sae.remove_parallel_grad()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), cfg.max_grad_norm)
        self.opt.step()
        if self.sae.unit_norm_decoder:
            self.sae.normalise_decoder()
        self.since_fired += cfg.batch_size
        self.since_fired[fired] = 0
        self.fired_count += fired.long()
        return out

    def _log_record(self, out, x, y, tokens_per_s) -> dict:
        with torch.no_grad():
            var = (y - y.mean(0)).pow(2).sum()
            fvu = float((y - out.recon).pow(2).sum() / var.clamp_min(1e-12))
        return {"step": self.step, "tokens": self.step * self.cfg.batch_size,
                "loss": float(out.loss.detach()), "l0": float(out.l0), "fvu": fvu,
                "dead_frac": float((self.since_fired >= self.cfg.dead_tokens).float().mean()),
                "lr": self.opt.param_groups[0]["lr"], "tokens_per_s": round(tokens_per_s, 1),
                **{k: float(v) for k, v in out.parts.items()}}

    def export(self) -> SparseDictionary:
        """A copy of the dictionary with normalisation folded in, saved in SAELens format."""
        import copy

        sae = copy.deepcopy(self.sae)
        sae.fold_scaling(self.scale_in, self.scale_out)
        if self.rank == 0:
            from saes.formats import save_saelens

            freq = self.fired_count.double() / max(1, self.step)
            save_saelens(sae, self.run_dir / "sae",
                         sparsity=torch.log10(freq + 1e-10).float(),
                         metadata={"training_steps": self.step,
                                   "training_tokens": self.step * self.cfg.batch_size})
        return sae


def train_sae(cfg: TrainConfig, data: DataConfig | BatchSource | Tensor | dict,
              run_dir: str | Path, progress: bool = True) -> SparseDictionary:
    """Train (or resume) a dictionary into `run_dir`; see `Trainer`."""
    return Trainer(cfg, run_dir, data, progress=progress).train()


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


# --------------------------------------------------------------------------- helpers
def _trim_metrics(path: Path, step: int) -> None:
    """Keep the records of steps <= `step` (the checkpoint a run resumes from) in the metrics
    log: a killed run logged steps past its last checkpoint, and maybe half a line, that the
    resumed run logs again."""
    from interp.io import atomic_write_bytes

    if not path.is_file():
        return
    data = path.read_bytes()
    kept = []
    for line in data.splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except ValueError:
            break  # a half-written last line
        if not line.endswith(b"\n") or not isinstance(rec, dict) or rec.get("step", 0) > step:
            break
        kept.append(line)
    if sum(map(len, kept)) != len(data):
        atomic_write_bytes(path, b"".join(kept))


def _adam(module: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the module's parameters; the fused kernel (one pass over each parameter, ~6x
    faster than the default on CPU) wherever torch has it for them."""
    params = list(module.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            fused=fused or None)


def _lowp_matmuls(sae: SparseDictionary, dtype: torch.dtype) -> bool:
    """Switch an architecture's own low-precision matmuls on (standard: every dense matmul;
    top-k family: the selecting matmul, values recomputed exactly); False if it has none,
    and the trainer autocasts its step instead."""
    for attr in ("matmul_dtype", "select_dtype"):
        if hasattr(sae, attr):
            setattr(sae, attr, dtype)
            return True
    return False
