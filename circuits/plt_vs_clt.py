"""Per-layer transcoders (PLTs) against a cross-layer transcoder (CLT) over the same layers, at
equal total latents and equal training tokens, scored by `circuits.quality.replacement_quality`.

Ameisen et al. 2025 ("Circuit Tracing", transformer-circuits.pub) compare the two dictionaries
this way: at a fixed number of features, a CLT (each layer's features write to that layer's MLP
output and every later one's) reconstructs the MLP outputs better and leaves a larger share of a
graph's influence to features instead of error nodes than one transcoder per layer.

Equal footing, by construction here:

- one capture of every layer's MLP input and output (`blocks.L.ln2.hook_normalized`,
  `blocks.L.hook_mlp_out`) from one pass of the model over the corpus, held in memory; both sets
  train on exactly those rows, in the same shuffled order (`saes.data.TensorSource`);
- the same latents per layer (`width`, so `width * len(layers)` in all for each set), the same
  TopK `k` per layer and token, batch size, learning rate, steps and seed;
- the same prompts for every measure.

`compare_sets` returns each set's report and a flat table (one row per set) that
`benchmarks/plt_vs_clt.py` prints as JSON; `circuits.plots.fig_replacement_quality` draws the
reports side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.config import Config
from interp.errors import ConfigError

log = logging.getLogger(__name__)

IN, OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"


@dataclass(frozen=True)
class ComparisonConfig(Config):
    """What both sets share: layers, data, latents per layer, k, optimiser."""

    layers: tuple[int, ...] = (0, 1, 2, 3)  # contiguous (a CLT's layers are)
    tokens: int = 131_072  # training rows, the same for both sets
    width: int = 1024  # latents per layer (both sets: width * len(layers) in all)
    k: int = 16  # TopK active latents per layer and token (both)
    batch_size: int = 1024
    lr: float = 4e-3
    seed: int = 0
    context_size: int = 128
    corpus: str = "cpython"  # interp.data.CorpusSpec source

    def __post_init__(self):
        layers = tuple(int(i) for i in self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers or list(layers) != list(range(layers[0], layers[0] + len(layers))):
            raise ConfigError(f"layers must be contiguous and ascending (a CLT's are), got "
                              f"{list(layers)}.")
        if self.tokens < self.batch_size:
            raise ConfigError(f"tokens ({self.tokens}) must be at least one batch "
                              f"({self.batch_size}).")
        if not 1 <= self.k <= self.width:
            raise ConfigError(f"k ({self.k}) must be between 1 and width ({self.width}).")

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(h.format(layer=i) for i in self.layers for h in (IN, OUT))


@dataclass
class TrainedPair:
    """The two sets, trained on the same rows; `seconds` per set and for the capture."""

    plt: object
    clt: object
    tokens: int
    seconds: dict = field(default_factory=dict)


@torch.no_grad()
def capture(model, cfg: ComparisonConfig):
    """{hook: [tokens, d]} of every layer's MLP input and output, one forward pass per batch
    (stopping after the deepest layer), BOS and outlier rows dropped for all hooks alike."""
    from interp.caching import capture_batches
    from interp.data import CorpusSpec
    from interp.store import StoreConfig

    scfg = StoreConfig(model=getattr(model, "name", ""), hooks=cfg.hooks,
                       n_tokens=int(cfg.tokens * 1.25) + cfg.context_size * 16,
                       context_size=cfg.context_size, batch_size=16, shard_windows=16,
                       corpus=CorpusSpec(source=cfg.corpus))
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in cfg.hooks}
    n = 0
    for _, _, rows, _ in capture_batches(model, scfg):
        for h, r in rows.items():
            parts[h].append(r.float().cpu())
        n += next(iter(rows.values())).shape[0]
        if n >= cfg.tokens:
            break
    if n < cfg.tokens:
        raise ConfigError(f"The corpus {cfg.corpus!r} gave only {n} rows; ask for fewer tokens "
                          f"than {cfg.tokens}.")
    return {h: torch.cat(v)[: cfg.tokens] for h, v in parts.items()}


def train_pair(model, cfg: ComparisonConfig, out: str | Path, progress: bool = False,
               model_name: str = "") -> TrainedPair:
    """Train a PLT set (run `out/plt`, kind "transcoders") and a CLT (run `out/clt`) on the same
    captured rows; returns both as the replacement model's sets."""
    from circuits.transcoders import load_transcoders, train_transcoders
    from saes.base import SAEConfig
    from saes.data import DataConfig, TensorSource
    from saes.runs import train_run
    from saes.train import TrainConfig

    out = Path(out)
    name = model_name or getattr(model, "name", "")
    d = model.cfg.d_model
    seconds = {}
    t0 = time.perf_counter()
    rows = capture(model, cfg)
    seconds["capture"] = round(time.perf_counter() - t0, 2)
    log.info("captured %d rows of %d hooks in %.1f s", cfg.tokens, len(rows), seconds["capture"])

    t0 = time.perf_counter()
    train_transcoders(name, list(cfg.layers), out / "plt", tokens=cfg.tokens, width=cfg.width,
                      k=cfg.k, architecture="topk", batch_size=cfg.batch_size, lr=cfg.lr,
                      seed=cfg.seed, d_model=d, progress=progress, device="cpu",
                      source=TensorSource(rows, shuffle=cfg.seed))
    seconds["plt"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    sae = SAEConfig(architecture="clt", d_in=d, d_sae=cfg.width * len(cfg.layers), k=cfg.k,
                    transcoder=True, clt_layers=cfg.layers, clt_activation="topk",
                    hook_name=IN, hook_name_out=OUT, model_name=name)
    tcfg = TrainConfig(sae=sae, total_tokens=cfg.tokens, batch_size=cfg.batch_size, lr=cfg.lr,
                       seed=cfg.seed, checkpoint_every=0, device="cpu")
    train_run(tcfg, DataConfig(model=name, seed=cfg.seed), out / "clt", progress=progress,
              evaluate=False, source=TensorSource(rows, shuffle=cfg.seed))
    seconds["clt"] = round(time.perf_counter() - t0, 2)
    return TrainedPair(load_transcoders(out / "plt"), load_transcoders(out / "clt"),
                       cfg.tokens, seconds)


def _n_latents(tcs) -> int:
    if getattr(tcs, "kind", "") == "cross-layer transcoder":
        return int(tcs.clt.cfg.d_sae)
    return sum(int(tcs[i].cfg.d_sae) for i in tcs.layers)


def compare_sets(model, sets: dict, prompts: Sequence, config=None,
                 progress: bool = False, tokens: int | None = None) -> dict:
    """`replacement_quality` of each named set on the same prompts: {"reports": {name: report},
    "table": [one row per set]} (JSON-able)."""
    from circuits.quality import QualityConfig, replacement_quality

    cfg = config or QualityConfig()
    reports, table = {}, []
    for name, tcs in sets.items():
        t0 = time.perf_counter()
        rep = replacement_quality(model, tcs, prompts, cfg, progress=progress)
        reports[name] = rep
        table.append({
            "set": name, "feature_type": rep.get("feature_type", ""),
            "layers": list(tcs.layers), "latents": _n_latents(tcs), "train_tokens": tokens,
            "replacement_score": rep["replacement_score"],
            "completeness_score": rep["completeness_score"],
            "top1_agreement": rep["top1_agreement"], "kl_last": rep["kl_last"],
            "kl_all": rep["kl_all"], "nmse_mean": rep["nmse_mean"], "nmse": rep["nmse"],
            "seconds_quality": round(time.perf_counter() - t0, 2)})
    return {"reports": reports, "table": table}
