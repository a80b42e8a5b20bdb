"""The locality dial at inference: an additive block-structured attention bias, scaled per layer.

For query i and key j the bias is `-lambda_l * strength` when j is outside i's target block and 0
inside it; it is added to the attention scores before the softmax (the standard additive-bias
technique of ALiBi, Press et al. 2021, arXiv 2108.12409, and of T5's relative biases, here
block-structured). lambda_l = 0 leaves a layer untouched, so a trained model can be turned
towards localist (lambda -> 1) or distributed (lambda -> 0) attention without a weight change.

The bias is patched in through forward pre-hooks on each layer's attention module, found from the
canonical `blocks.{L}.attn.hook_pattern` of a `HookedModel` (torch backend, eager attention): the
hooks add the bias to the attention-mask argument of that module and are removed on exit, even on
error. Per-layer dials and the progressive schedules of "Progressive Localisation in Localist
LLMs" (arXiv 2511.18375), lambda_l = lambda_max * (l / (L - 1))^beta, live here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import ConfigError, InterpError

MAX_STRENGTH = 1e4


# ----------------------------------------------------------------------------- schedules
def progressive_schedule(n_layers: int, lam_max: float = 1.0, beta: float = 1.0) -> list[float]:
    """lambda_l = lam_max * (l / (L - 1))^beta for l = 0..L-1 (distributed early, local late)."""
    if n_layers < 1 or beta <= 0:
        raise ConfigError(f"Need n_layers >= 1 and beta > 0, got {n_layers} and {beta}.")
    _check_lams([lam_max])
    if n_layers == 1:
        return [float(lam_max)]
    return [float(lam_max * (layer / (n_layers - 1)) ** beta) for layer in range(n_layers)]


def named_schedules(n_layers: int, lam_max: float = 1.0, betas: Sequence[float] = (1, 3, 5)
                    ) -> dict[str, list[float]]:
    """The two uniform baselines and one progressive schedule per beta, by name."""
    out = {"uniform-distributed": [0.0] * n_layers,
           "uniform-localist": [float(lam_max)] * n_layers}
    for b in betas:
        out[f"progressive-beta{b:g}"] = progressive_schedule(n_layers, lam_max, b)
    return out


def _check_lams(lams: Sequence[float]) -> None:
    bad = [x for x in lams if not 0.0 <= float(x) <= 1.0]
    if bad:
        raise ConfigError(f"Locality dials must lie in [0, 1] (0 distributed, 1 localist); got "
                          f"{bad}.")


def layer_dials(dial: float | Sequence[float], n_layers: int) -> list[float]:
    """One dial per layer from a single value or a per-layer sequence (checked)."""
    if isinstance(dial, (int, float)):
        lams = [float(dial)] * n_layers
    else:
        lams = [float(x) for x in dial]
        if len(lams) != n_layers:
            raise ConfigError(f"Got {len(lams)} per-layer dials for a model with {n_layers} "
                              "layers; give one value or one per layer.")
    _check_lams(lams)
    return lams


# ----------------------------------------------------------------------------- the bias
def block_bias(tmask: Bool[Tensor, "batch query key"], strength: float
               ) -> Float[Tensor, "batch 1 query key"]:
    """0 on each query's target block, -strength elsewhere (before scaling by the dial)."""
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise ConfigError(f"Bias strength must lie in [0, {MAX_STRENGTH:g}], got {strength}.")
    return ((~tmask).float() * -float(strength))[:, None]


def _causal_mask(q: int, k: int, dtype, device) -> Tensor:
    m = torch.full((q, k), torch.finfo(dtype).min, dtype=dtype, device=device).triu(k - q + 1)
    return m[None, None]


def attention_modules(model) -> list[str]:
    """Dotted paths of each layer's attention module, from the canonical hook table."""
    if getattr(model, "backend", None) != "torch":
        raise InterpError("The locality dial patches attention through torch hooks: load the "
                          "model with load_model(..., backend='torch').")
    impl = getattr(model.hf_model.config, "_attn_implementation", "eager")
    if impl != "eager":
        raise InterpError(f"The model uses {impl!r} attention, which returns no pattern and "
                          "takes no additive bias; load it with attn_implementation='eager' "
                          "(load_model does).")
    return [model.hook_points[f"blocks.{layer}.attn.hook_pattern"].module
            for layer in range(model.cfg.n_layers)]


@dataclass
class DialState:
    """What a dialled forward pass recorded: `patterns[layer]` ([batch, head, query, key])."""

    dials: list[float]
    patterns: dict[int, Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def locality_dial(model, dials: float | Sequence[float], tmask: Bool[Tensor, "batch query key"],
                  strength: float = 2.0, record: bool | Sequence[int] = False
                  ) -> Iterator[DialState]:
    """Turn the dial for the forward passes inside the `with` block (of inputs matching `tmask`).

    `dials`: one value or one per layer in [0, 1]. `record`: True (every layer) or a list of
    layers whose attention patterns are kept in `state.patterns`, with their autograd graph
    when the forward runs under grad (the training penalty needs it). Weights are never touched.
    """
    modules = dict(model.hf_model.named_modules())
    paths = attention_modules(model)
    lams = layer_dials(dials, len(paths))
    rec = set(range(len(paths))) if record is True else set(record or ())
    state = DialState(dials=lams)
    bias = block_bias(tmask, strength) if any(lams) else None
    handles = []

    def make_pre(lam: float):
        def pre(mod, args, kwargs):
            mask = kwargs.get("attention_mask")
            b = bias.to(device=args[0].device if args else kwargs["hidden_states"].device)
            q, k = b.shape[-2:]
            if mask is None:
                mask = _causal_mask(q, k, b.dtype, b.device)
            elif mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=b.dtype, device=b.device).masked_fill(
                    ~mask, torch.finfo(b.dtype).min)
            if mask.shape[-2:] != (q, k):
                raise InterpError(f"The dial was set up for {q} x {k} attention but the model "
                                  f"ran {tuple(mask.shape[-2:])}: build the target mask from "
                                  "the same token ids the model runs on.")
            return args, {**kwargs, "attention_mask": mask + (lam * b).to(mask.dtype)}
        return pre

    def make_rec(layer: int):
        def post(mod, args, output):
            pattern = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if pattern is None:
                raise InterpError(f"Layer {layer}'s attention returned no pattern; load the model "
                                  "with eager attention.")
            state.patterns[layer] = pattern
        return post

    try:
        for layer, (path, lam) in enumerate(zip(paths, lams)):
            if lam != 0.0:
                handles.append(modules[path].register_forward_pre_hook(make_pre(lam),
                                                                       with_kwargs=True))
            if layer in rec:
                handles.append(modules[path].register_forward_hook(make_rec(layer)))
        yield state
    finally:
        for h in handles:
            h.remove()
