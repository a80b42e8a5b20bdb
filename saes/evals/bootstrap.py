"""Uncertainty of every evaluation figure: bootstrap confidence intervals and seed spread.

A metric is a statistic of examples (held-out rows, probe test tokens, spelling words, latents
scored by an explainer). `bootstrap` resamples the examples with replacement `n_boot` times,
recomputes the statistic and reports the percentile interval (Efron & Tibshirani 1993, ch. 13):
the (1 - level)/2 and (1 + level)/2 quantiles of the bootstrap distribution. Two refinements keep
the interval honest where examples are not independent draws:

- `strata`: resample within each stratum (a task, a letter) separately, so every stratum keeps
  its size, as the statistic (e.g. a mean over tasks of per-task accuracies) expects;
- `groups`: resample whole groups (the tokens of one document) instead of single rows (the
  cluster bootstrap), since neighbouring tokens are correlated.

The interval covers sampling noise of the examples with the fitted parts (probes, the
explanations) held fixed; training noise is what `seed_spread` over retrained SAEs measures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from interp.errors import ConfigError

#: default number of bootstrap resamples and interval level
N_BOOT = 1000
LEVEL = 0.95
#: the vectorised mean path resamples in blocks of at most this many values
_BLOCK = 1 << 22


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval over `n` examples."""

    value: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    n_boot: int = N_BOOT

    def to_dict(self) -> dict:
        return asdict(self)

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}.")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}.")


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def resamples(n: int, n_boot: int, rng: np.random.Generator, strata: np.ndarray | None = None,
              groups: np.ndarray | None = None):
    """Yield `n_boot` index arrays into `n` examples: plain, stratified and/or by group."""
    if strata is None and groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    if strata.shape != (n,) or (groups is not None and np.shape(groups) != (n,)):
        raise ConfigError(f"strata and groups need one entry per example ({n}).")
    if groups is None:
        rows = [np.flatnonzero(strata == s) for s in np.unique(strata)]
        for _ in range(n_boot):
            yield np.concatenate([r[rng.integers(0, len(r), len(r))] for r in rows])
        return
    groups = np.asarray(groups)
    cells = []  # per stratum: the member rows of each group
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        g = groups[rows]
        order = np.argsort(g, kind="stable")
        _, starts = np.unique(g[order], return_index=True)
        cells.append(np.split(rows[order], starts[1:]))
    for _ in range(n_boot):
        parts = []
        for members in cells:
            pick = rng.integers(0, len(members), len(members))
            parts.extend(members[i] for i in pick)
        yield np.concatenate(parts)


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = N_BOOT,
              level: float = LEVEL, seed: int = 0, strata=None, groups=None) -> Interval:
    """Percentile interval of `statistic(indices)` over resampled example indices.

    `statistic` receives an int array of example indices (with repeats) and returns a float; the
    point estimate is `statistic(arange(n))`. Non-finite resample values are dropped.
    """
    _check(n_boot, level)
    if n < 1:
        raise ConfigError("bootstrap needs at least one example.")
    value = float(statistic(np.arange(n)))
    rng = np.random.default_rng(seed)
    stats = np.fromiter((statistic(idx) for idx in resamples(n, n_boot, rng, strata, groups)),
                        dtype=np.float64, count=n_boot)
    lo, hi = _percentiles(stats, level)
    return Interval(value, lo, hi, n, level, n_boot)


def mean_interval(values, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
                  strata=None, groups=None) -> Interval:
    """Interval of the mean of `values` (of the mean over strata of per-stratum means when
    `strata` is given). Plain resampling is vectorised."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ConfigError("mean_interval needs at least one value.")
    if groups is not None:
        s = np.zeros(v.size, dtype=np.int64) if strata is None else np.asarray(strata)
        keys = np.unique(s)

        def stat(idx):
            return float(np.mean([v[idx[s[idx] == k]].mean() for k in keys]))
        return bootstrap(stat, v.size, n_boot=n_boot, level=level, seed=seed, strata=s,
                         groups=groups)
    _check(n_boot, level)
    rng = np.random.default_rng(seed)
    s = np.zeros(v.size, dtype=np.int64) if strata is None else np.asarray(strata)
    if s.shape != v.shape:
        raise ConfigError(f"strata need one entry per value ({v.size}).")
    parts = [v[s == k] for k in np.unique(s)]
    stats = np.zeros(n_boot)
    for part in parts:  # vectorised resampling of each stratum's mean, in blocks
        per_block = max(1, _BLOCK // part.size)
        means = [part[rng.integers(0, part.size, (min(per_block, n_boot - b), part.size))].mean(1)
                 for b in range(0, n_boot, per_block)]
        stats += np.concatenate(means)
    stats /= len(parts)
    lo, hi = _percentiles(stats, level)
    value = float(np.mean([p.mean() for p in parts]))
    return Interval(value, lo, hi, int(v.size), level, n_boot)


def ratio_interval(num, den, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
                   groups=None, transform: Callable[[float], float] | None = None) -> Interval:
    """Interval of sum(num) / sum(den) (e.g. FVU = sum of squared errors / sum of variances),
    optionally passed through `transform` (e.g. 1 - r for explained variance)."""
    a = np.asarray(num, dtype=np.float64).reshape(-1)
    b = np.asarray(den, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ConfigError(f"num and den need the same length, got {a.size} and {b.size}.")
    f = transform or (lambda r: r)

    def stat(idx):
        d = b[idx].sum()
        return f(a[idx].sum() / d) if d != 0 else float("nan")
    return bootstrap(stat, a.size, n_boot=n_boot, level=level, seed=seed, groups=groups)


def seed_spread(values) -> dict:
    """Mean, sample standard deviation, min and max of one metric over training seeds."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n_seeds": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n_seeds": int(v.size), "mean": float(v.mean()),
            "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}
