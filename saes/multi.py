"""Several dictionaries trained side by side on one data source.

From a store, every batch is read once for all of them; streaming from a model, one forward
pass caches every hook they need (the store's capture stops after the deepest). Each dictionary
keeps its own run directory, checkpoint and metrics, so each is an ordinary run afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from interp.devices import to_device
from interp.errors import ConfigError
from saes.base import SparseDictionary
from saes.data import BatchSource, DataConfig, as_source
from saes.reader import Prefetcher, rank_batches
from saes.train import TrainConfig, Trainer

_SHARED = ("total_tokens", "batch_size")


def _hooks(cfg: TrainConfig) -> list[str]:
    return [cfg.sae.hook_name] + ([cfg.sae.hook_name_out] if cfg.sae.transcoder else [])


def train_many(cfgs: Sequence[TrainConfig], run_dirs: Sequence[str | Path],
               data: DataConfig | BatchSource | Tensor | dict, progress: bool = True,
               trainers: list[Trainer] | None = None, source: BatchSource | None = None
               ) -> list[SparseDictionary | None]:
    """Train every config into its run directory from one shared data source.

    The configs must agree on tokens and batch size; they may differ in hook, architecture,
    width, optimiser settings and device (each batch is read once and copied to each). Resumes together from their checkpoints (which must be at the
    same step). `trainers`, if given, receives the Trainers.
    """
    if len(cfgs) != len(run_dirs) or not cfgs:
        raise ConfigError("train_many needs one run directory per config (and at least one).")
    for key in _SHARED:
        values = {getattr(c, key) for c in cfgs}
        if len(values) > 1:
            raise ConfigError(f"train_many: the configs differ in {key!r} ({sorted(map(str, values))}); "
                              "dictionaries trained together share their data settings.")
    source = source if source is not None else as_source(data)
    made = [Trainer(c, d, data, progress=False) for c, d in zip(cfgs, run_dirs)]
    for t in made:
        t.source = source  # one reader for all (the DataConfig goes into their checkpoints)
    if trainers is not None:
        trainers.extend(made)
    trainers = made
    steps = {t.step for t in trainers}
    if len(steps) > 1:
        raise ConfigError(f"The runs' checkpoints are at different steps {sorted(steps)}; resume "
                          "them separately (interp resume RUN).")
    from tqdm.auto import tqdm

    step = steps.pop()
    for t in trainers:
        t.begin()
    bar = tqdm(total=cfgs[0].total_steps, initial=step, unit="step", disable=not progress,
               desc=f"{len(trainers)} dictionaries")
    batches = None
    try:
        hooks = list(dict.fromkeys(h for c in cfgs for h in _hooks(c)))
        first = trainers[0]

        def make():
            return rank_batches(source, hooks, cfgs[0].batch_size, step, cfgs[0].total_steps,
                                first.rank, first.world)

        batches = Prefetcher(make, first.prefetch) if first.prefetch else make()
        while step < cfgs[0].total_steps:
            batch = next(batches)
            for t, c in zip(trainers, cfgs):
                hin, hout = _hooks(c)[0], _hooks(c)[-1]
                t.step_on(to_device(batch[hin], t.device, torch.float32),
                          to_device(batch[hout], t.device, torch.float32))
            step += 1
            bar.update(1)
    finally:
        if isinstance(batches, Prefetcher):
            batches.close()
        bar.close()
        for t in reversed(trainers):  # each restores the handlers it found: last in, first out
            t.close()
    return [t.finish() for t in trainers]
