"""Data-parallel plumbing for the trainer (torch.distributed under `torchrun`: gloo on CPU,
nccl on GPU) and the signal handlers that turn Ctrl-C / SIGTERM into a checkpoint."""

from __future__ import annotations

import os
import signal

import torch
from torch import Tensor


def dist_info() -> tuple[int, int]:
    """(world size, rank), initialising the process group under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def all_reduce_grads(module: torch.nn.Module) -> None:
    """Average the gradients over ranks."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def all_reduce_max(mask: Tensor) -> Tensor:
    """A boolean mask true where it is true on any rank."""
    import torch.distributed as dist

    m = mask.to(torch.int32)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return m.bool()


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
