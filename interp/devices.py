"""The device and dtype policy: one way, everywhere, to say where and in what precision to compute.

Devices: `auto` | `cpu` | `cuda` | `cuda:N` | `mps` (and `meta` from Python, for shape and
memory logic). `auto` is CUDA if this machine has it, then MPS, then the CPU. Under `torchrun`,
`cuda` (and `auto` on a CUDA machine) is `cuda:LOCAL_RANK` (modulo the visible GPUs, for
schedulers that show each process only its own): one GPU per process.

Dtypes: `float32` | `bfloat16` | `float16`, and `auto` where a command allows it: the low
precision the hardware multiplies natively (`native_lowp_dtype`: bf16 on Ampere or newer GPUs
and on CPUs with AMX or AVX512-BF16, fp16 on Volta/Turing GPUs), else float32.

Configs hold the spec as written (`check_device` checks only its form), so a run.json made on a
GPU machine still reads on a laptop; `resolve_device` turns it into a `torch.device` when work
starts, and fails there, before any work, naming the devices this machine has. The CLI's
`--device` / `--dtype` options (`interp.cli_devices`) resolve at parse time, so a command asked
for a device it cannot have exits with code 2 before it loads anything.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from interp.errors import DeviceError

#: the dtypes a `--dtype` names
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
_DEVICE = re.compile(r"^(auto|cpu|mps|meta|cuda(:\d+)?)$")


# --------------------------------------------------------------------------- specs
def check_device(spec: str | torch.device) -> str:
    """The device spec as a canonical string, checked for form only (not availability)."""
    s = str(spec).strip().lower()
    if not _DEVICE.match(s):
        raise DeviceError(f"Unknown device {str(spec)!r}: use auto, cpu, cuda, cuda:N (N = GPU "
                          "index) or mps.")
    return s


def check_dtype(spec: str | torch.dtype, allow_auto: bool = True) -> str:
    """The dtype spec as a canonical name (float32 | bfloat16 | float16 | auto)."""
    s = dtype_name(spec) if isinstance(spec, torch.dtype) else str(spec).strip().lower()
    s = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(s, s)
    if s in DTYPES or (allow_auto and s == "auto"):
        return s
    names = [*DTYPES, *(["auto"] if allow_auto else [])]
    raise DeviceError(f"Unknown dtype {str(spec)!r}: use {' | '.join(names)}.")


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32 (the name configs and run.json use)."""
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- this machine
def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine has, as specs: cpu, then cuda:0.., then mps."""
    return ["cpu", *(f"cuda:{i}" for i in range(cuda_count())),
            *(["mps"] if mps_available() else [])]


def _local_rank() -> int | None:
    """This process's GPU index under torchrun (None outside it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The `torch.device` a spec names on this machine; `DeviceError` (naming what is
    available) if it has no such device."""
    s = check_device("auto" if spec is None else spec)
    if s == "auto":
        s = "cuda" if cuda_count() else "mps" if mps_available() else "cpu"
    if s in ("cpu", "meta"):
        return torch.device(s)
    have = ", ".join(available_devices())
    if s == "mps":
        if not mps_available():
            raise DeviceError(f"Device 'mps' (Apple GPU) asked for, but it is not available; "
                              f"this machine has: {have}. Use --device auto (or cpu).")
        return torch.device("mps")
    n = cuda_count()
    if n == 0:
        why = ("this torch build has no CUDA (torch.version.cuda is None)"
               if torch.version.cuda is None else "no CUDA GPU is visible (check the driver "
               "and CUDA_VISIBLE_DEVICES)")
        raise DeviceError(f"Device {s!r} asked for, but {why}; this machine has: {have}. "
                          "Use --device auto (or cpu).")
    if ":" in s:
        index = int(s.split(":")[1])
    else:  # under torchrun the local rank's GPU (modulo what is visible: a scheduler may show
        index = (_local_rank() or 0) % n  # each rank only its own)
    if index >= n:
        raise DeviceError(f"Device cuda:{index} asked for, but there are {n} CUDA device(s); "
                          f"this machine has: {have}.")
    return torch.device("cuda", index)


def native_lowp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The low precision this device multiplies natively, or None.

    CUDA: bf16 on compute capability 8.0+ (Ampere, Hopper: bf16 tensor cores), fp16 on 7.x
    (Volta, Turing: fp16 tensor cores only). CPU: bf16 with AMX or AVX512-BF16 (emulated bf16
    on other CPUs is far slower than fp32). MPS and others: None."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16 if major >= 7 else None
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        return torch.bfloat16 if (amx or avx512_bf16) else None
    return None


def resolve_dtype(spec: str | torch.dtype, device: torch.device | str = "cpu") -> torch.dtype:
    """The `torch.dtype` a spec names; `auto` is the device's native low precision, else
    float32."""
    s = check_dtype(spec)
    if s == "auto":
        return native_lowp_dtype(device) or torch.float32
    return DTYPES[s]


def device_name(device: torch.device | str) -> str:
    """A person's name for a device ('NVIDIA H100 80GB HBM3', 'cpu')."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return device.type


# --------------------------------------------------------------------------- memory, copies
def free_memory(device: torch.device | str) -> int | None:
    """Bytes free on `device` now (CUDA: `mem_get_info`; CPU: the kernel's MemAvailable;
    MPS: the recommended working set less what the driver holds), or None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if device.type == "mps" and hasattr(torch, "mps"):
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    return None


def pinned(t: Tensor) -> Tensor:
    """`t` in page-locked host memory when a CUDA device exists (so a copy to it can be
    non-blocking), else `t` itself."""
    if t.device.type == "cpu" and torch.cuda.is_available() and not t.is_pinned():
        return t.pin_memory()
    return t


def to_device(t: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """`t` on `device` (then in `dtype`): a host tensor goes to a GPU by a non-blocking copy
    from pinned memory, and is converted there (half the bytes cross the bus for a bf16 store)."""
    if t.device != device:
        if device.type == "cuda" and t.device.type == "cpu":
            t = pinned(t).to(device, non_blocking=True)
        else:
            t = t.to(device)
    return t if dtype is None or t.dtype == dtype else t.to(dtype)
