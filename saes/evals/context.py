"""The settings of an evaluation (`SuiteConfig`, one field per CLI flag) and what every suite
can reach while it runs (`EvalContext`: the dictionary, its baselines, the model and the
labelled activations, each built on first use)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from interp.config import Config
from interp.errors import ConfigError, check_config_keys
from saes.base import SparseDictionary
from saes.evals.bootstrap import Interval, bootstrap, mean_interval

log = logging.getLogger(__name__)

DEFAULT_SUITES = ("core", "probing", "absorption", "synthetic", "autointerp")


@dataclass(frozen=True)
class SuiteConfig(Config):
    """Everything an evaluation depends on (recorded in the report)."""

    suites: tuple[str, ...] = DEFAULT_SUITES  # also: scr, tpp (flagged unreliable)
    baselines: tuple[str, ...] = ("random", "neurons", "pca")
    seeds: int = 1  # > 1: also evaluate the run retrained with seeds 1 .. seeds-1
    n_bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0  # every sampling choice of the evaluation
    # labelled activations shared by the LM suites
    n_windows: int = 512
    context_size: int = 64
    data_dir: str = ""  # cache of those activations ("": <out>/data)
    # core
    eval_rows: int = 16_384
    lm_windows: int = 16
    # probing
    probe_ks: tuple[int, ...] = (1, 2, 5, 10, 20)
    probe_train: int = 1000  # training examples per binary task (balanced)
    probe_test: int = 500
    # absorption
    absorption_words: int = 1024
    spelling_prompts: int = 200
    min_spelling_accuracy: float = 0.5
    # synthetic
    synthetic_rows: int = 32_768  # held-out rows the metrics are measured on
    synthetic_tokens: int = 1_000_000  # training rows of the synthetic SAE
    # scr / tpp
    scr_top_n: tuple[int, ...] = (2, 5, 10, 20)
    # autointerp
    explainer: str = ""  # a local HF causal LM directory; "": the default model (placeholder)
    scorer: str = ""  # "": the explainer
    autointerp_latents: int = 16
    autointerp_examples: int = 5  # activating and as many non-activating examples per scorer
    device: str = "cpu"

    def __post_init__(self):
        for name in ("suites", "baselines", "probe_ks", "scr_top_n"):
            v = getattr(self, name)
            v = tuple(x.strip() for x in v.split(",") if x.strip()) if isinstance(v, str) else v
            if name in ("probe_ks", "scr_top_n"):
                try:
                    v = tuple(int(x) for x in v)
                except ValueError as e:
                    raise ConfigError(f"{name} must be integers, got {v!r}.") from e
            object.__setattr__(self, name, tuple(v))
        if self.seeds < 1 or self.n_bootstrap < 1:
            raise ConfigError(f"seeds and n_bootstrap must be >= 1, got {self.seeds}, "
                              f"{self.n_bootstrap}.")
        if not 0 < self.level < 1:
            raise ConfigError(f"level must be in (0, 1), got {self.level}.")


    @classmethod
    def settings_from_strings(cls, pairs: Sequence[str]) -> dict:
        """Fields from `KEY=VALUE` strings (the CLI's `--set`), each converted to its field's
        type (lists comma-separated); an unknown key or a bad value is a `ConfigError`."""
        defaults = cls()
        out = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise ConfigError(f"--set takes KEY=VALUE, got {pair!r}.")
            check_config_keys(cls, {key: text})
            kind = type(getattr(defaults, key))
            try:
                out[key] = text if kind in (str, tuple) else kind(text)
            except ValueError as e:
                raise ConfigError(f"{key} must be a {kind.__name__}, got {text!r}.") from e
        return out


class EvalContext:
    """One dictionary under evaluation and its lazily built surroundings."""

    def __init__(self, sae: SparseDictionary, cfg: SuiteConfig, out_dir: str | Path, *,
                 model=None, model_name: str = "", data=None, store=None, train_cfg=None,
                 subjects: tuple[str, ...] | None = None, progress: bool = False):
        self.sae = sae.eval()
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self._model = model
        self.model_name = model_name or getattr(model, "name", "") or sae.cfg.model_name
        self._data = data
        self.store = store
        self.train_cfg = train_cfg
        self.only = subjects  # None: the SAE and the suite's baselines
        self.progress = progress
        self._baselines: dict[str, SparseDictionary] = {}
        self._l0: float | None = None

    # ----------------------------------------------------------------- lazily built
    def model(self):
        if self._model is None:
            from interp.models.loading import load_model

            log.info("loading model %s", self.model_name or "(default)")
            self._model = load_model(self.model_name or None, device=self.cfg.device)
        return self._model

    def data(self):
        if self._data is None:
            from saes.evals.data import EvalDataConfig, eval_data

            dcfg = EvalDataConfig(n_windows=self.cfg.n_windows, context_size=self.cfg.context_size,
                              seed=self.cfg.seed)
            cache = Path(self.cfg.data_dir) if self.cfg.data_dir else self.out_dir / "data"
            self._data = eval_data(self.model, self.sae.cfg.hook_name, dcfg, cache=cache,
                                   model_name=self.model_name, progress=self.progress)
        return self._data

    def sae_l0(self) -> float:
        """The SAE's mean L0 on the evaluation rows (sets the random baseline's k)."""
        if self._l0 is None:
            from saes.evals.baselines import mean_l0

            self._l0 = mean_l0(self.sae, self.baseline_rows())
        return self._l0

    def baseline_rows(self) -> torch.Tensor:
        return self.data().rows(self.cfg.eval_rows)

    def subjects(self, baselines: tuple[str, ...]) -> dict[str, SparseDictionary]:
        """"sae" and the baselines of `baselines` that the config asks for, in that order."""
        from saes.evals.baselines import make_baseline

        out = {"sae": self.sae}
        if self.only is not None:
            return {k: v for k, v in out.items() if k in self.only}
        for name in baselines:
            if name not in self.cfg.baselines:
                continue
            if name not in self._baselines:
                self._baselines[name] = make_baseline(name, self.sae.cfg, self.baseline_rows(),
                                                      self.sae_l0(), seed=self.cfg.seed)
            out[name] = self._baselines[name]
        return out

    # ----------------------------------------------------------------- intervals
    def interval(self, values, **kw) -> Interval:
        return mean_interval(values, n_boot=self.cfg.n_bootstrap, level=self.cfg.level,
                             seed=self.cfg.seed, **kw)

    def boot(self, statistic: Callable[[np.ndarray], float], n: int, **kw) -> Interval:
        return bootstrap(statistic, n, n_boot=self.cfg.n_bootstrap, level=self.cfg.level,
                         seed=self.cfg.seed, **kw)


@torch.no_grad()
def encode_rows(sae: SparseDictionary, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """sae.encode over rows in batches (float32 on the CPU)."""
    p = next(sae.parameters())
    out = [sae.encode(x[i:i + batch].to(p.device, p.dtype)).float().cpu()
           for i in range(0, x.shape[0], batch)]
    return torch.cat(out) if out else torch.zeros(0, sae.cfg.d_sae)


@torch.no_grad()
def pooled_latents(sae: SparseDictionary, acts: torch.Tensor, batch_windows: int = 16
                   ) -> torch.Tensor:
    """Mean over positions 1.. (BOS left out) of the latents of each window: [W, d_sae]."""
    p = next(sae.parameters())
    out = []
    for i in range(0, acts.shape[0], batch_windows):
        a = acts[i:i + batch_windows, 1:]
        z = sae.encode(a.reshape(-1, a.shape[-1]).to(p.device, p.dtype)).float().cpu()
        out.append(z.view(a.shape[0], a.shape[1], -1).mean(1))
    return torch.cat(out)
