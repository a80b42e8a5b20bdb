"""Several dictionaries trained side by side on one data source.

From a store, every batch is read once for all of them; streaming from a model, one forward
pass caches every hook they need (the store's capture stops after the deepest). Each dictionary
keeps its own run directory, checkpoint and metrics, so each is an ordinary run afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import Tensor

from interp.errors import ConfigError
from saes.base import SparseDictionary
from saes.train import TrainConfig, Trainer

_SHARED = ("activations", "model", "total_tokens", "batch_size", "seed", "holdout_every",
           "shuffle_buffer_rows")


def _hooks(cfg: TrainConfig) -> list[str]:
    return [cfg.sae.hook_name] + ([cfg.sae.hook_name_out] if cfg.sae.transcoder else [])


def shared_source(cfgs: Sequence[TrainConfig]):
    """`source(start)`: an iterator of {hook: raw rows} global batches from batch `start`."""
    first = cfgs[0]
    hooks = list(dict.fromkeys(h for c in cfgs for h in _hooks(c)))

    def source(start: int) -> Iterator[dict[str, Tensor]]:
        if first.activations:
            from interp.store import ActivationStore

            store = ActivationStore(first.activations)
            return store.batches(hooks, first.batch_size, seed=first.seed, split="train",
                                 holdout_every=first.holdout_every,
                                 buffer_rows=first.shuffle_buffer_rows, epochs=None,
                                 start_batch=start)
        from interp.models.loading import load_model
        from interp.caching import stream_activations
        from interp.store import StoreConfig

        model = load_model(first.model or None)
        it = stream_activations(model, StoreConfig(model=model.name, hooks=tuple(hooks),
                                                   n_tokens=first.total_tokens * 2),
                                first.batch_size, seed=first.seed)
        for _ in range(start):
            next(it)
        return it

    return source


def train_many(cfgs: Sequence[TrainConfig], run_dirs: Sequence[str | Path],
               progress: bool = True, trainers: list[Trainer] | None = None
               ) -> list[SparseDictionary | None]:
    """Train every config into its run directory from one shared data source.

    The configs must agree on the data (`activations`/`model`, tokens, batch size, seed); they
    may differ in hook, architecture, width and optimiser settings. Resumes together from their
    checkpoints (which must be at the same step). `trainers`, if given, receives the Trainers.
    """
    if len(cfgs) != len(run_dirs) or not cfgs:
        raise ConfigError("train_many needs one run directory per config (and at least one).")
    for key in _SHARED:
        values = {getattr(c, key) for c in cfgs}
        if len(values) > 1:
            raise ConfigError(f"train_many: the configs differ in {key!r} ({sorted(map(str, values))}); "
                              "dictionaries trained together share their data settings.")
    source = shared_source(cfgs)

    def own(cfg):
        hin, hout = _hooks(cfg)[0], _hooks(cfg)[-1]
        return lambda start: ((b[hin], b[hout]) for b in source(start))

    made = [Trainer(c, d, progress=False, batches=own(c)) for c, d in zip(cfgs, run_dirs)]
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
    try:
        batches = source(step)
        while step < cfgs[0].total_steps:
            batch = next(batches)
            for t, c in zip(trainers, cfgs):
                hooks = _hooks(c)
                t.step_on(batch[hooks[0]], batch[hooks[-1]])
            step += 1
            bar.update(1)
    finally:
        bar.close()
        for t in reversed(trainers):  # LIFO: each restores the signal handler it replaced
            t.close()
    return [t.finish() for t in trainers]
