"""Exact Jacobian linearisation of a forward pass (Golden, arXiv 2505.24293).

Freeze the norm scales, the activated gates and the attention patterns at their values on one
prompt and the network is linear in its input embeddings: y = Σ_i J_i x_i reproduces the output.

- the network itself is the frozen network of `interp.models` (`families` read a Hugging Face
  model into it, `frozen` runs it detached or replayed, `adjoint` is its transpose);
- `jacobian`: `DetachedJacobian` (products, exactness, dense J) and the autograd references;
- `svd`: top singular triplets from products (block Krylov, randomized), stable rank;
- `decode`, `analysis`: decodings to tokens, per-layer Jacobians, `linearise(model, config)`;
- `plots`, `runs`, `cli`: figures, the "linearise" run kind, `interp linearise`.

Submodules load lazily: `from interp.linearise import linearise, LineariseConfig`.
"""

from __future__ import annotations

_LAZY = {
    "linearise": "interp.linearise.analysis",
    "LineariseConfig": "interp.linearise.analysis",
    "Linearisation": "interp.linearise.analysis",
    "DetachedJacobian": "interp.linearise.jacobian",
    "autograd_jacobian": "interp.linearise.jacobian",
    "read_net": "interp.models.families",
    "linearise_run": "interp.linearise.runs",
    "load_linearisation": "interp.linearise.runs",
    "demo_step": "interp.linearise.runs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interp.linearise' has no attribute {name!r}")
