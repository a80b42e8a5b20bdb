"""Pretrained transcoder sets for attribution graphs, by name.

`load_pretrained_transcoders("gemma")` (circuit-tracer's Gemma Scope set), a SAELens
transcoder release (`"gemma-scope-2b-pt-transcoders"`), any circuit-tracer Hub repo or a local
directory gives the `TranscoderSet` that `circuits.attribution.attribute` and
`circuits.runs.graph_run` take, checked against the model when one is given. Finding and
reading the files is `saes.pretrained.sets`, whose `save_pretrained_set_run` (`interp
pretrained get SET`) writes a set as a "transcoders" run that `interp attribute --transcoders
DIR` reads.
"""

from __future__ import annotations

from pathlib import Path

from circuits.transcoders import SUPPORTED, TranscoderSet
from interp.errors import ConfigError


def load_pretrained_transcoders(name: str | Path, *, layers: list[int] | None = None,
                                select: str | None = None, model=None, local_dir=None,
                                cache_dir=None, revision: str | None = None) -> TranscoderSet:
    """A pretrained per-layer transcoder set as a `TranscoderSet` (see
    `saes.pretrained.sets.load_pretrained_set` for the names it takes). With a loaded
    `model`, the set must fit it exactly as attribution needs (layers, hooks, widths)."""
    from saes.pretrained.sets import load_pretrained_set

    got = load_pretrained_set(name, layers=layers, select=select, model=model,
                              local_dir=local_dir, cache_dir=cache_dir, revision=revision)
    for layer, tc in got.by_layer.items():
        if tc.cfg.architecture not in SUPPORTED:
            raise ConfigError(f"Layer {layer} of {got.source!r} is a {tc.cfg.architecture!r} "
                              f"dictionary; attribution needs one of {', '.join(SUPPORTED)}.")
    out = TranscoderSet({k: v.float().eval().requires_grad_(False)
                         for k, v in got.by_layer.items()}, source=got.source)
    if model is not None and hasattr(model, "hook_points"):
        out.check(model)
    return out
