"""How much memory a training run needs, where, and whether it fits: checked before any work.

The estimate of a run of `TrainConfig` on a source, per device:

    dictionary  the parameters (fp32 master weights, whatever the autocast dtype)
    gradients   one per parameter (alive from a backward to the next step's zero_grad)
    optimiser   Adam's two moments per parameter
    buffers     the architecture's reused [batch, d_sae] buffers (`SparseDictionary.step_memory`)
    batch       this rank's rows on the device: raw, and scaled by the normalisation
    model       the weights of the model a `ModelSource` streams from (on its own device)
    reader      the host side of the source (a batch of store rows; the shuffle buffer)
  at the peak, the larger of:
    step        what a training step holds only while it runs (`step_memory`)
    export      the host copy of the dictionary made at the end, and its largest matrix
                transposed into the SAELens layout (host memory)

A checkpoint adds nothing: its tensors are streamed to the file one at a time
(`interp.io.save_safetensors_atomic`).

Parts on the host count against the CPU's available memory, parts on a GPU against its free
memory (`torch.cuda.mem_get_info`), less the parts already allocated when it is read (the
trainer checks after making the dictionary and loading a streamed model); `check()` raises
`DeviceMemoryError` with the figures and what to change when a device would run out, and the
trainer calls it before it reads a batch. On the CPU the estimate is within 20% of the measured peak resident memory of a run
(tests/test_devices.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from interp.devices import free_memory
from interp.errors import DeviceMemoryError

log = logging.getLogger(__name__)

GIB = 1 << 30
#: fraction of a device's free memory a run may plan to use (allocator slack, other tenants)
USABLE = 0.9


@dataclass
class MemoryEstimate:
    """Bytes per device: `parts` held throughout, `peaks` of which only the largest is alive
    at once. `free` is what each device had free when checked (None: unknown); `resident`
    names the parts already allocated then (not counted again against it)."""

    parts: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> name -> bytes
    peaks: dict[str, dict[str, int]] = field(default_factory=dict)
    free: dict[str, int | None] = field(default_factory=dict)
    resident: set[str] = field(default_factory=set)

    def add(self, device: torch.device | str, name: str, nbytes: int, peak: bool = False):
        key = str(torch.device(device))
        table = self.peaks if peak else self.parts
        table.setdefault(key, {})[name] = table.get(key, {}).get(name, 0) + int(nbytes)
        self.parts.setdefault(key, {})
        return self

    def total(self, device: torch.device | str | None = None) -> int:
        """The peak bytes on `device` (None: summed over devices)."""
        keys = [str(torch.device(device))] if device is not None else list(self.parts)
        return sum(sum(self.parts.get(k, {}).values()) + max(self.peaks.get(k, {}).values(),
                                                             default=0) for k in keys)

    def describe(self) -> str:
        lines = []
        for key in self.parts:
            items = {**self.parts[key], **self.peaks.get(key, {})}
            shown = ", ".join(f"{n} {v / GIB:.2f}" for n, v in items.items() if v)
            free = self.free.get(key)
            lines.append(f"{key}: {self.total(key) / GIB:.2f} GiB ({shown})"
                         + (f"; {free / GIB:.1f} GiB free" if free is not None else ""))
        return "memory estimate: " + "; ".join(lines)

    def check(self) -> MemoryEstimate:
        """Log the estimate; raise `DeviceMemoryError` if a device would run out."""
        for key in self.parts:
            if key not in self.free:
                self.free[key] = free_memory(key)
        log.info(self.describe())
        for key in self.parts:
            need = self.total(key) - sum(v for n, v in self.parts[key].items()
                                         if n in self.resident)
            free = self.free[key]
            if free is not None and need > USABLE * free:
                raise DeviceMemoryError(
                    f"This run needs about {need / GIB:.2f} GiB more on {key} but only "
                    f"{free / GIB:.2f} GiB are free ({self.describe()}). Lower --batch-size or "
                    "--width, train in bf16 (--dtype bfloat16), or put the model and the "
                    "dictionary on different devices (--model-device).")
        return self


def _param_bytes(sae) -> int:
    return sum(p.numel() * p.element_size() for p in sae.parameters())


def estimate_training(cfg, source=None, device: torch.device | str = "cpu", world: int = 1,
                      lowp: torch.dtype | None = None, resident: tuple[str, ...] = ()
                      ) -> MemoryEstimate:
    """The memory estimate of training `cfg` (a `TrainConfig`) from `source` on `device`
    with `world` data-parallel ranks (this rank's share) and the autocast dtype `lowp`;
    `resident`: the parts already allocated (e.g. "dictionary", "model")."""
    from saes.architectures import architecture_class

    device = torch.device(device)
    with torch.device("meta"):  # the module's shapes, without allocating it
        sae = architecture_class(cfg.sae.architecture)(cfg.sae)
    if lowp is not None:
        sae.use_lowp(lowp)
    batch = cfg.batch_size // world
    p = _param_bytes(sae)
    est = MemoryEstimate(resident=set(resident))
    est.add(device, "dictionary", p)
    est.add(device, "gradients", p + (p if world > 1 else 0))  # + the all-reduce's flat copy
    est.add(device, "optimiser", 2 * p)
    mem = sae.step_memory(batch, device)
    est.add(device, "buffers", mem["buffers"])
    width = cfg.sae.d_in + cfg.sae.out_dim
    est.add(device, "batch", 2 * batch * width * 4)
    est.add(device, "step", mem["step"], peak=True)
    largest = max(q.numel() * q.element_size() for q in sae.parameters())
    est.add("cpu", "export", p + largest, peak=True)
    foot = getattr(source, "footprint", None)
    if foot is not None:
        hooks = [cfg.sae.hook_name] + ([cfg.sae.hook_name_out] if cfg.sae.transcoder else [])
        for name, nbytes in foot(cfg.batch_size, hooks).items():
            where = "cpu"
            if name == "model":
                where = next(source.model.hf_model.parameters()).device
            est.add(where, name, nbytes)
    return est
