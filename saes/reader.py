"""The trainer's reader: this rank's rows of each global batch, read ahead in a background
thread and put on the training device.

- Rank-sharded: a source that can (`StoreSource`, `TensorSource`, `ModelSource`: they take
  `part=(rank, world)`) reads only this rank's rows [rank * b / world, (rank + 1) * b / world)
  of each global batch; any other source's global batch is sliced here. The rows are those of
  one process's batch, so data-parallel training sees the same data as one process.
- Prefetching (`prefetch=n`): a background thread reads up to n batches ahead and, for a CUDA
  target, copies them into page-locked memory, so the step only issues a non-blocking copy.
  The thread is joined in `close()`, which the trainer calls in a `finally`: on success, on an
  error, and on Ctrl-C / SIGTERM (after the step's checkpoint is written); no thread outlives
  its reader, none is left running when the interpreter shuts down.
- On the device: `interp.devices.to_device` (pinned memory, `non_blocking=True` for CUDA, the
  conversion to float32 done on the device after the copy).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from interp.devices import pinned, to_device

_END = object()


class Prefetcher:
    """Iterate `make()`'s items, produced up to `depth` ahead by a background thread.

    `make` is called in the thread (the iterator it returns lives and is closed there);
    `prepare` runs on each item in the thread. An exception in the thread is raised by
    `__next__`. `close()` stops and joins the thread; it is idempotent."""

    def __init__(self, make: Callable[[], Iterator], depth: int = 2,
                 prepare: Callable | None = None):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._make, self._prepare = make, prepare
        self._thread = threading.Thread(target=self._run, name="interp-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = None
        try:
            it = self._make()
            for item in it:
                if self._prepare is not None:
                    item = self._prepare(item)
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer
            self._put(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


def rank_batches(source, hooks: Sequence[str], batch_size: int, start: int,
                 n_batches: int | None, rank: int = 0, world: int = 1
                 ) -> Iterator[dict[str, Tensor]]:
    """This rank's rows of global batches `start`, `start + 1`, ... of `source`."""
    if world == 1:
        return source.batches(hooks, batch_size, start, n_batches=n_batches)
    if getattr(source, "reads_parts", False):
        return source.batches(hooks, batch_size, start, n_batches=n_batches, part=(rank, world))
    lo, hi = rank * batch_size // world, (rank + 1) * batch_size // world
    return ({h: v[lo:hi] for h, v in b.items()}
            for b in source.batches(hooks, batch_size, start, n_batches=n_batches))


class Reader:
    """(input, target) float32 batches of this rank on `device`, from batch index `start` on.

    `hooks` are (input hook, output hook) (the same for an SAE). Close it when done."""

    def __init__(self, source, hooks: tuple[str, str], batch_size: int, start: int,
                 n_batches: int | None, device: torch.device, rank: int = 0, world: int = 1,
                 prefetch: int = 0):
        self.hooks, self.device = hooks, device
        wanted = list(dict.fromkeys(hooks))

        def make():
            return rank_batches(source, wanted, batch_size, start, n_batches, rank, world)

        if prefetch > 0:
            prepare = self._pin if device.type == "cuda" else None
            self._it = Prefetcher(make, prefetch, prepare)
        else:
            self._it = make()

    @staticmethod
    def _pin(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {h: pinned(v.contiguous()) for h, v in batch.items()}

    def __iter__(self):
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        b = next(self._it)
        x = to_device(b[self.hooks[0]], self.device, torch.float32)
        y = x if self.hooks[1] == self.hooks[0] else to_device(b[self.hooks[1]], self.device,
                                                               torch.float32)
        return x, y

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
