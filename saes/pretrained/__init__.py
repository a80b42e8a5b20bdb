"""Pretrained sparse dictionaries by name: SAELens's registry releases (Gemma Scope 1 and 2,
Llama Scope, the Pythia and GPT-2 SAEs, SAEBench, Qwen Scope, transcoders ...) and
circuit-tracer's transcoder sets, from a local directory, the Hugging Face cache or the Hub.

- `load_pretrained(release, sae_id, model=None)` -> one `SparseDictionary`;
- `load_pretrained_set(name, layers=None)` -> per-layer transcoders (`circuits.pretrained`
  wraps them for attribution graphs);
- `list_pretrained(model=None)` -> the releases;
- `save_pretrained_run` / `save_pretrained_set_run` write them into the workspace.

The names are imported on first use, so that listing the registry does not import torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Pretrained": "load", "fetch_pretrained": "load", "load_pretrained": "load",
    "save_pretrained_run": "load", "Entry": "registry", "Release": "registry",
    "list_pretrained": "registry", "releases": "registry", "PretrainedSet": "sets",
    "load_pretrained_set": "sets", "save_pretrained_set_run": "sets",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"saes.pretrained.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'saes.pretrained' has no attribute {name!r}")
