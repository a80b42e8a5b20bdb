"""Training sparse dictionaries (SAEs, transcoders) from any batch source (`saes.data`: an
activation store, a live model, tensors in memory).

One loop serves every architecture: Adam with warm-up and decay, sparsity-coefficient warm-up,
dead-latent tracking (fed to the AuxK loss of the top-k family), unit-norm decoders where the
architecture trains with them, activation normalisation estimated first and folded into the
weights at save time. Checkpoints hold everything a step depends on (weights, Adam moments,
counters, the reader's batch index), so a resumed run continues bit-exactly; SIGINT/SIGTERM
write one before exiting. `TrainConfig` (saes.train_config, re-exported here) says how a
dictionary is optimised. Under `torchrun` it is data parallel (gloo on CPU, nccl on GPU, one
GPU per rank): every rank reads only its own rows of the same shuffled global batch
(`saes.reader`). `TrainConfig` holds the optimisation only; where the data comes from is the
source's business.

Devices (`interp.devices`): the dictionary, its optimiser and its counters live on
`TrainConfig.device`; batches come to it through pinned memory and non-blocking copies,
optionally read ahead by a background thread. A step reads nothing back to the host on an
accelerator (no `.item()` or `bool()` of a device tensor): the metrics are read every
`log_every` steps, the collective stop flag one step late (`saes.distributed.StopFlag`). Only
fp16 autocast reads one flag per step (the gradient scaler's overflow check).
`autocast` (bfloat16 | float16 | auto) runs the step in low precision with fp32 master weights
and Adam state; fp16 adds dynamic loss scaling (`torch.amp.GradScaler`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from interp.devices import resolve_device, resolve_dtype
from interp.errors import ConfigError
from saes.architectures import create_sae
from saes.base import SparseDictionary
from saes.checkpoint import read_checkpoint, read_meta, recover, write_checkpoint
from saes.data import BatchSource, DataConfig, as_source
from saes.distributed import (StopFlag, all_reduce_grads, all_reduce_max, dist_info,
                              install_signals, restore_signals)
from saes.reader import Reader
from saes.train_config import TrainConfig, lr_factor, split_config

__all__ = ["TrainConfig", "Trainer", "lr_factor", "split_config", "train_sae"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- trainer
class Trainer:
    """Train one dictionary into `run_dir` (resuming a checkpoint there if present).

    `data` is where batches come from: a `DataConfig` (a store or a model), any
    `saes.data.BatchSource`, or tensors in memory (one tensor, or {hook: tensor}). The source
    must give the same batch for the same index, or resuming is not exact.

    `prefetch` (batches read ahead by a thread; None: 2 on a GPU, else 0) is for sources given
    directly; a `DataConfig` says its own. `check_memory` estimates the run's memory
    (`saes.memory`) and refuses a run that will not fit its device before it makes the
    dictionary.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path,
                 data: DataConfig | BatchSource | Tensor | dict, progress: bool = True,
                 prefetch: int | None = None, check_memory: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.data = data.to_dict() if isinstance(data, DataConfig) else None  # for checkpoints
        self._data, self._source = data, None
        self.hooks = [cfg.sae.hook_name] + ([cfg.sae.hook_name_out] if cfg.sae.transcoder else [])
        self.device = resolve_device(cfg.device)
        self.prefetch = data.prefetch if isinstance(data, DataConfig) else prefetch
        if self.prefetch is None:
            self.prefetch = 2 if self.device.type == "cuda" else 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.world, self.rank = dist_info(self.device)
        if cfg.batch_size % self.world:
            raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the "
                              f"{self.world} processes.")
        lowp = resolve_dtype(cfg.autocast, self.device)
        self.lowp = None if lowp == torch.float32 else lowp
        if check_memory:  # before the dictionary exists: a run that cannot fit does nothing
            self.memory().check()
        self.sae: SparseDictionary = create_sae(cfg.sae, seed=cfg.seed).to(self.device)
        self.opt = _adam(self.sae, cfg)
        self._autocast = self.lowp is not None and not self.sae.use_lowp(self.lowp)
        self._scaler = (torch.amp.GradScaler(self.device.type) if self.lowp == torch.float16
                        else None)
        self.step = 0
        self.scale_in = self.scale_out = 1.0
        # tokens since each latent fired, and how often it fired (on the device: no host trips)
        self.since_fired = torch.zeros(cfg.sae.d_sae, dtype=torch.long, device=self.device)
        self.fired_count = torch.zeros(cfg.sae.d_sae, dtype=torch.long, device=self.device)
        self._stop = False  # a signal arrived here
        self._stop_now = False  # stop after this step: `_stop` on any rank, decided together
        self._stop_flag = StopFlag(self.device)
        self._reader: Reader | None = None
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

    def reader(self, start: int, whole: bool = False, prefetch: int = 0) -> Reader:
        """(input, target) batches on the device from batch index `start` on: this rank's rows
        (`whole`: every row of each global batch)."""
        world, rank = (1, 0) if whole else (self.world, self.rank)
        return Reader(self.source, (self.hooks[0], self.hooks[-1]), self.cfg.batch_size, start,
                      self.cfg.total_steps, self.device, rank, world, prefetch)

    def memory(self):
        """The run's memory estimate (`saes.memory.estimate_training`), with the source's own
        footprint if the source is open (a streamed model's weights count as resident)."""
        from saes.memory import estimate_training

        resident = ("model",) + (("dictionary",) if hasattr(self, "sae") else ())
        return estimate_training(self.cfg, self._source or _given_source(self._data),
                                 self.device, world=self.world, lowp=self.lowp,
                                 resident=resident)

    def _initialise_from_data(self) -> None:
        """Estimate normalisation scales and the decoder bias from the first global batches
        (all rows, so every rank gets the same)."""
        xs, ys = [], []
        probe = self.reader(0, whole=True)
        try:
            for _ in range(min(8, max(1, self.cfg.total_steps))):
                x, y = next(probe)
                xs.append(x)
                ys.append(y)
        finally:
            probe.close()
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
            meta = {"step": self.step, "scale_in": self.scale_in, "scale_out": self.scale_out,
                    "config": self.cfg.to_dict(), "data": self.data}
            if self._scaler is not None:
                meta["scaler"] = self._scaler.state_dict()
            write_checkpoint(final, self.sae, self.opt,
                             {"since_fired": self.since_fired, "fired_count": self.fired_count},
                             meta)
        return final

    def _load_checkpoint(self) -> None:
        ck = self.run_dir / "checkpoint"
        meta = read_meta(ck)
        config, data = split_config({**meta["config"], "data": meta.get("data")})
        mine = DataConfig.from_dict(self.data) if self.data is not None else None
        if (config.identity() != self.cfg.identity()
                or None not in (data, mine) and data.identity() != mine.identity()):
            raise ConfigError(f"The checkpoint in {ck} was made with another config; resume with "
                              "`interp resume RUN` (which reads it) or use a new run directory.")
        d_sae = self.cfg.sae.d_sae
        meta, extra = read_checkpoint(ck, self.sae, self.opt, {"since_fired": (d_sae,),
                                                              "fired_count": (d_sae,)})
        self.since_fired = extra["since_fired"].to(self.device)
        self.fired_count = extra["fired_count"].to(self.device)
        self.step, self.scale_in, self.scale_out = meta["step"], meta["scale_in"], meta["scale_out"]
        if self._scaler is not None and "scaler" in meta:
            self._scaler.load_state_dict(meta["scaler"])

    # ----------------------------------------------------------------- training
    def _on_signal(self, signum, frame):
        log.warning("Signal %s: writing a checkpoint after this step.", signum)
        self._stop = True

    def train(self, stop_after: int | None = None) -> SparseDictionary | None:
        """Run to `total_steps` (from the checkpoint if resumed); returns the trained module
        with normalisation folded in, also saved in SAELens format under `run_dir/sae`.

        `stop_after=n` pauses after n more steps with a checkpoint and returns None (the same
        command resumes it); a SIGINT/SIGTERM does the same and raises KeyboardInterrupt."""
        end = (self.cfg.total_steps if stop_after is None
               else min(self.cfg.total_steps, self.step + stop_after))
        self.begin()
        try:
            self._reader = self.reader(self.step, prefetch=self.prefetch)
            while self.step < end:
                self.step_on(*next(self._reader))
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
        """One optimisation step on raw (unnormalised) rows on the device: this rank's rows, or
        a whole global batch (this rank's rows are taken from it)."""
        cfg = self.cfg
        if self.world > 1 and x.shape[0] == cfg.batch_size:
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
        """Stop the reader (joining its thread), close the metrics file, restore signals."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
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
        # a latent is dead after `dead_tokens` tokens without firing, so none can be before
        # that many tokens have gone by: known on the host, no need to look at the counters
        dead = (self.since_fired >= cfg.dead_tokens
                if self.step * cfg.batch_size >= cfg.dead_tokens else None)
        sparsity = (min(1.0, (self.step + 1) / cfg.sparsity_warmup_steps)
                    if cfg.sparsity_warmup_steps else 1.0)
        autocast = (torch.autocast(x.device.type, dtype=self.lowp) if self._autocast
                    else contextlib.nullcontext())
        with autocast:
            out = self.sae.training_loss(x, y, dead=dead, sparsity_scale=sparsity)
        self.opt.zero_grad(set_to_none=True)
        (out.loss if self._scaler is None else self._scaler.scale(out.loss)).backward()
        fired = out.fired
        if self.world > 1:
            all_reduce_grads(self.sae)
            fired, stop = all_reduce_max(fired, self._stop)
            self._stop_now = self._stop_flag.read(stop)
        else:
            self._stop_now = self._stop
        if self._scaler is not None:
            self._scaler.unscale_(self.opt)
        if self.sae.unit_norm_decoder:
            self.sae.remove_parallel_grad()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), cfg.max_grad_norm)
        if self._scaler is not None:
            self._scaler.step(self.opt)  # skips a step whose gradients overflowed
            self._scaler.update()
        else:
            self.opt.step()
        if self.sae.unit_norm_decoder:
            self.sae.normalise_decoder()
        self.since_fired += cfg.batch_size
        self.since_fired.masked_fill_(fired, 0)
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
        """A host copy of the dictionary with normalisation folded in, saved in SAELens
        format."""
        sae = host_copy(self.sae)
        sae.fold_scaling(self.scale_in, self.scale_out)
        if self.rank == 0:
            from saes.formats import save_saelens

            freq = self.fired_count.cpu().double() / max(1, self.step)
            save_saelens(sae, self.run_dir / "sae",
                         sparsity=torch.log10(freq + 1e-10).float(),
                         metadata={"training_steps": self.step,
                                   "training_tokens": self.step * self.cfg.batch_size})
        return sae


def train_sae(cfg: TrainConfig, data: DataConfig | BatchSource | Tensor | dict,
              run_dir: str | Path, progress: bool = True) -> SparseDictionary:
    """Train (or resume) a dictionary into `run_dir`; see `Trainer`."""
    return Trainer(cfg, run_dir, data, progress=progress).train()


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


def _given_source(data) -> BatchSource | None:
    """`data` if it is an opened source (not a config or tensors, which open later)."""
    return data if not isinstance(data, (DataConfig, Tensor, dict)) and isinstance(
        data, BatchSource) else None


def host_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `module` on the host, made without a second copy on its device."""
    import copy

    memo = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().to("cpu", copy=True),
                                         requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().to("cpu", copy=True)
    return copy.deepcopy(module, memo)


def _adam(module: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the module's parameters; the fused kernel (one pass over each parameter, ~6x
    faster than the default on CPU) wherever torch has it for them."""
    params = list(module.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            fused=fused or None)
