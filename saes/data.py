"""The data seam of training: where a trainer's activation batches come from.

A trainer asks a `BatchSource` for global batches of some hooks from a batch index on, and the
same index always gives the same batch, so a resumed run reads exactly what an uninterrupted
one would (one resume path for every source). The sources:

- `StoreSource`: an activation store on disk (`interp cache`), shuffled in a seeded buffer, the
  store's held-out windows left out;
- `ModelSource`: a model run over the corpus, no disk (every hook from one forward pass);
- `TensorSource`: tensors in memory, cycled (tests, synthetic data, notebooks).

`DataConfig` names a store or a model, and `DataConfig.source()` builds the source; the trainer
takes either. (SAELens separates its data provider from the training loop the same way.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from interp.config import Config
from interp.errors import ConfigError, HookNotFound, unknown_name_message


@runtime_checkable
class BatchSource(Protocol):
    """Global batches {hook: [batch_size, d] rows}, resumable at a batch index."""

    def batches(self, hooks: Sequence[str], batch_size: int, start: int = 0,
                n_batches: int | None = None) -> Iterator[dict[str, Tensor]]:
        """Batches number `start`, `start + 1`, ...; `n_batches` is how many the caller will
        read in all (from 0), which a streaming source uses to size its corpus. A source whose
        `reads_parts` is true also takes `part=(rank, world)`: only that rank's rows
        [rank * b / world, (rank + 1) * b / world) of each batch (`saes.reader`)."""
        ...

    def width(self, hook: str) -> int:
        """The width of `hook`'s vectors."""
        ...


@dataclass(frozen=True)
class DataConfig(Config):
    """Where training data comes from: a store (`activations`) or a model run live."""

    activations: str = ""  # an activation-store directory; empty: stream from `model`
    model: str = ""  # model to stream from (empty: the default model)
    seed: int = 0  # shuffling seed
    holdout_every: int = 50  # windows held out of training (the store's eval split)
    shuffle_buffer_rows: int = 1 << 18
    # where the streamed model runs and in what dtype (interp.devices); the dictionary trains
    # on TrainConfig.device, which may differ (a model on one GPU, dictionaries on another)
    model_device: str = "auto"
    model_dtype: str = "float32"
    # batches read ahead by a background thread (None: 2 when training on a GPU, else 0)
    prefetch: int | None = None

    def __post_init__(self):
        from interp.devices import check_device, check_dtype

        object.__setattr__(self, "model_device", check_device(self.model_device))
        object.__setattr__(self, "model_dtype", check_dtype(self.model_dtype))
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0 (or None for automatic), not "
                              f"{self.prefetch}.")

    def source(self, model=None) -> BatchSource:
        """The source this config names (`model`: an already loaded model to stream from)."""
        if self.activations:
            return StoreSource(self.activations, seed=self.seed, holdout_every=self.holdout_every,
                               buffer_rows=self.shuffle_buffer_rows)
        return ModelSource(model if model is not None else self.model, seed=self.seed,
                           device=self.model_device, dtype=self.model_dtype)

    def identity(self) -> dict:
        """The fields that decide which rows a run reads (not where or how fast it reads them):
        what a resumed run must agree on."""
        d = self.to_dict()
        for key in ("model_device", "prefetch"):
            d.pop(key)
        return d


class StoreSource:
    """Shuffled training batches of an activation store (its held-out windows left out)."""

    reads_parts = True  # reads only a rank's rows (and checks every world-th shard)

    def __init__(self, path, seed: int = 0, holdout_every: int = 50, buffer_rows: int = 1 << 18):
        from interp.store import ActivationStore

        self.store = ActivationStore(path)
        self.path, self.seed, self.holdout_every, self.buffer_rows = (
            str(path), seed, holdout_every, buffer_rows)

    def _check(self, hooks: Sequence[str]) -> None:
        for h in hooks:
            if h not in self.store.hooks:
                raise HookNotFound(unknown_name_message(
                    "hook in the activation store", h, self.store.hooks,
                    hint=f"The store at {self.path} holds {self.store.hooks}."))

    def batches(self, hooks, batch_size, start=0, n_batches=None, part=None):
        hooks = list(dict.fromkeys(hooks))
        self._check(hooks)
        return self.store.batches(hooks, batch_size, seed=self.seed, split="train",
                                  holdout_every=self.holdout_every, buffer_rows=self.buffer_rows,
                                  epochs=None, start_batch=start, part=part)

    def footprint(self, batch_size: int, hooks: Sequence[str]) -> dict[str, int]:
        """Host bytes the reader holds: a batch of store rows, its float32 copy, and the
        buffer's row references (two int64 per row)."""
        d = sum(self.store.d(h) for h in dict.fromkeys(hooks))
        item = DTYPE_BYTES[self.store.manifest["dtype"]]
        return {"reader": batch_size * d * (item + 4) + 16 * self.buffer_rows}

    def width(self, hook: str) -> int:
        self._check([hook])
        return self.store.d(hook)


class ModelSource:
    """Batches captured from a model over the corpus, shuffled in memory, never on disk.

    The corpus is sized from the number of batches the trainer will read (twice their tokens,
    as the filters drop rows), so the same request replays the same stream."""

    reads_parts = True  # (every rank runs the model over the whole batch; rows are sliced)

    def __init__(self, model=None, seed: int = 0, device: str = "auto", dtype: str = "float32"):
        from interp.models.loading import load_model

        self.model = model if model is not None and not isinstance(model, str) else load_model(
            model or None, device=device, dtype=dtype)
        self.seed = seed

    def footprint(self, batch_size: int, hooks: Sequence[str]) -> dict[str, int]:
        """Bytes of the model's weights (on its device) and of the shuffle buffer (host)."""
        params = sum(p.numel() * p.element_size() for p in self.model.hf_model.parameters())
        d = sum(self.width(h) for h in dict.fromkeys(hooks))
        return {"model": params, "reader": 4 * d * (batch_size + (1 << 16))}

    def batches(self, hooks, batch_size, start=0, n_batches=None, part=None):
        it = self._batches(hooks, batch_size, start, n_batches)
        return it if part is None else _slice_part(it, batch_size, part)

    def _batches(self, hooks, batch_size, start, n_batches):
        from interp.caching import stream_activations
        from interp.store import StoreConfig

        if n_batches is None:
            raise ConfigError("Streaming from a model needs the number of batches to read "
                              "(n_batches), which sizes the corpus.")
        cfg = StoreConfig(model=self.model.name, hooks=tuple(dict.fromkeys(hooks)),
                          n_tokens=n_batches * batch_size * 2)
        it = stream_activations(self.model, cfg, batch_size, seed=self.seed)
        for _ in range(start):
            next(it)
        return it

    def width(self, hook: str) -> int:
        from interp.models.widths import hook_width

        self.model.validate_hooks([hook])
        return hook_width(self.model.cfg, hook)


class TensorSource:
    """Rows held in memory: batch i is rows [i*b, (i+1)*b) modulo the number of whole batches,
    or, with `shuffle` (a seed), the same slice of epoch e's permutation of the rows (a
    function of seed and epoch alone, so any batch index can be replayed).

    `data` is one tensor (served for any hook: an SAE's input and target) or {hook: tensor}
    with the same number of rows each."""

    reads_parts = True  # (rows are sliced from the global batch)

    def __init__(self, data: Tensor | Mapping[str, Tensor], shuffle: int | None = None):
        self.shuffle = shuffle
        self.data = data if isinstance(data, Mapping) else None
        self.tensor = None if isinstance(data, Mapping) else data
        rows = {v.shape[0] for v in (self.data.values() if self.data else [self.tensor])}
        if len(rows) != 1:
            raise ConfigError(f"TensorSource: every hook needs the same number of rows, got "
                              f"{sorted(rows)}.")
        self.rows = rows.pop()

    def _get(self, hook: str) -> Tensor:
        if self.data is None:
            return self.tensor
        if hook not in self.data:
            raise HookNotFound(unknown_name_message("hook of the in-memory data", hook,
                                                    self.data))
        return self.data[hook]

    def batches(self, hooks, batch_size, start=0, n_batches=None, part=None):
        it = self._batches(hooks, batch_size, start)
        return it if part is None else _slice_part(it, batch_size, part)

    def _batches(self, hooks, batch_size, start):
        n = self.rows // batch_size
        if n == 0:
            raise ConfigError(f"TensorSource has {self.rows} rows, fewer than one batch of "
                              f"{batch_size}.")
        tensors = {h: self._get(h) for h in dict.fromkeys(hooks)}
        i, perm = start, None
        while True:
            epoch, j = divmod(i, n)
            if self.shuffle is None:
                yield {h: t[j * batch_size:(j + 1) * batch_size] for h, t in tensors.items()}
            else:
                if j == 0 or perm is None:
                    perm = torch.randperm(self.rows, generator=torch.Generator().manual_seed(
                        self.shuffle * 7919 + epoch))
                idx = perm[j * batch_size:(j + 1) * batch_size]
                yield {h: t[idx] for h, t in tensors.items()}
            i += 1

    def width(self, hook: str) -> int:
        return int(self._get(hook).shape[1])


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _slice_part(batches: Iterator[dict[str, Tensor]], batch_size: int, part: tuple[int, int]
                ) -> Iterator[dict[str, Tensor]]:
    rank, world = part
    lo, hi = rank * batch_size // world, (rank + 1) * batch_size // world
    return ({h: v[lo:hi] for h, v in b.items()} for b in batches)


def as_source(data: DataConfig | BatchSource | Tensor | Mapping[str, Tensor]) -> BatchSource:
    """A `BatchSource` from a config, a source, or tensors in memory."""
    if isinstance(data, DataConfig):
        return data.source()
    if isinstance(data, (Tensor, Mapping)):
        return TensorSource(data)
    if isinstance(data, BatchSource):
        return data
    raise ConfigError(f"Training data must be a DataConfig, a BatchSource or tensors, not "
                      f"{type(data).__name__}.")
