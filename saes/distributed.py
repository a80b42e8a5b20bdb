"""Data-parallel plumbing for the trainer (torch.distributed under `torchrun`: gloo on CPU,
nccl on GPU) and the signal handlers that turn Ctrl-C / SIGTERM into a checkpoint.

Shutdown: a process group that is still alive when the interpreter finalises can abort the
process (gloo's worker threads hold work objects whose tensors reach back into Python; freeing
them after the interpreter is gone ends in `terminate called without an active exception`,
SIGABRT, pytorch/pytorch#190489). The group this module creates is therefore destroyed by an
`atexit` handler, which runs while the interpreter is still whole, on success, error and Ctrl-C
alike. Stopping is collective: a signal on any rank stops every rank after the same step
(`any_rank`), so no rank is left waiting in a collective for a peer that has gone.
"""

from __future__ import annotations

import atexit
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
        atexit.register(shutdown)
    return dist.get_world_size(), dist.get_rank()


def shutdown() -> None:
    """Destroy the default process group if one is alive (idempotent; see the module doc)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(module: torch.nn.Module) -> None:
    """Average the gradients over ranks."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def all_reduce_max(mask: Tensor, flag: bool = False) -> tuple[Tensor, bool]:
    """(a boolean mask true where it is true on any rank, `flag` or-ed over ranks), in one
    collective: the flag rides as one more element of the mask."""
    import torch.distributed as dist

    m = torch.cat([mask.reshape(-1).to(torch.int32),
                   torch.tensor([int(flag)], dtype=torch.int32, device=mask.device)])
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return m[:-1].view(mask.shape).bool(), bool(m[-1])


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
