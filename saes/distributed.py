"""Data-parallel plumbing for the trainer (torch.distributed under `torchrun`: gloo on CPU,
nccl on GPU) and the signal handlers that turn Ctrl-C / SIGTERM into a checkpoint.

Shutdown: a process group that is still alive when the interpreter finalises can abort the
process (gloo's worker threads hold work objects whose tensors reach back into Python; freeing
them after the interpreter is gone ends in `terminate called without an active exception`,
SIGABRT, pytorch/pytorch#190489). The group this module creates is therefore destroyed by an
`atexit` handler, which runs while the interpreter is still whole, on success, error and Ctrl-C
alike. Stopping is collective: a signal on any rank stops every rank after the same step
(`all_reduce_max`, read through `StopFlag`), so no rank is left waiting in a collective for a
peer that has gone. On GPUs each rank trains on `cuda:LOCAL_RANK` (`interp.devices`).
"""

from __future__ import annotations

import atexit
import os
import signal

import torch
from torch import Tensor


def dist_info(device: torch.device | None = None) -> tuple[int, int]:
    """(world size, rank), initialising the process group under torchrun: nccl when the
    training device is a GPU (each rank on `cuda:LOCAL_RANK`, made its current device), gloo
    otherwise. `device=None` keeps the older rule: nccl whenever CUDA is present."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device if device is not None
                                  else int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(shutdown)
    return dist.get_world_size(), dist.get_rank()


def shutdown() -> None:
    """Destroy the default process group if one is alive (idempotent; see the module doc)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(module: torch.nn.Module) -> None:
    """Average the gradients over ranks, in one collective over a flat buffer (one message
    instead of one per parameter; each element is summed as by separate calls)."""
    import torch.distributed as dist

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_max(mask: Tensor, flag: bool = False) -> tuple[Tensor, Tensor]:
    """(a boolean mask true where it is true on any rank, `flag` or-ed over ranks as a 0-d
    int tensor on the mask's device), in one collective: the flag rides as one more element."""
    import torch.distributed as dist

    m = torch.cat([mask.reshape(-1).to(torch.int32),
                   torch.tensor([int(flag)], dtype=torch.int32, device=mask.device)])
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return m[:-1].view(mask.shape).bool(), m[-1]


class StopFlag:
    """Reads the or-ed stop flag of each step without stalling a GPU.

    On the CPU the flag is read at once. On an accelerator, reading it would wait for the whole
    step to finish (a host round trip per step), so the flag is copied to page-locked host
    memory without blocking and read one step later, when that copy is long done: every rank
    reads the same reduced value, so all ranks still stop after the same step (one later)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._pending: tuple[Tensor, object] | None = None

    def read(self, flag: Tensor) -> bool:
        if flag.device.type == "cpu":
            return bool(flag)
        previous = False
        if self._pending is not None:
            host, event = self._pending
            event.synchronize()
            previous = bool(host)
        host = torch.empty((), dtype=flag.dtype, pin_memory=flag.device.type == "cuda")
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event() if flag.device.type == "cuda" else None
        if event is None:  # other accelerators: read now
            return previous or bool(host)
        event.record()
        self._pending = (host, event)
        return previous


def install_signals(handler) -> dict:
    """Route SIGINT and SIGTERM to `handler`; returns the old handlers (main thread only)."""
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return old


def restore_signals(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)
