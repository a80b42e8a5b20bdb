"""interp: a mechanistic-interpretability toolkit for transformer language models.

Heavy modules load lazily, so `import interp` is fast and changes nothing global.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_model": "interp.models.loading",
    "HookedModel": "interp.models.base",
    "ActivationStore": "interp.store",
    "StoreConfig": "interp.store",
    "cache_activations": "interp.caching",
    "CorpusSpec": "interp.data",
    "InterpError": "interp.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
