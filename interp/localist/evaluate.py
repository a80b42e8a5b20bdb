"""Dialled forward passes and their evaluation: entropy, pointer fidelity, perplexity, accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.localist.blocks import BlockSpec, block_structure, target_blocks
from interp.localist.dial import DialState, locality_dial
from interp.localist.metrics import LocalityMeter, group_lasso


def dialled_forward(model, ids: Int[Tensor, "batch pos"], spec: BlockSpec,
                    dials: float | Sequence[float], strength: float = 2.0,
                    record: bool | Sequence[int] = False, attention_mask: Tensor | None = None
                    ) -> tuple[Tensor, DialState, Tensor, Tensor]:
    """Run `model` (a torch-backend HookedModel) on `ids` with the dial set.

    Returns (logits, state with the recorded patterns, block ids, target mask). Hooks attached
    with `model.hooks(...)` apply as usual.
    """
    ids = ids.to(model.device)
    blocks, tmask = block_structure(ids, spec, model.tokenizer)
    with locality_dial(model, dials, tmask.to(model.device), strength, record) as state:
        logits = model.forward(ids, attention_mask=attention_mask)
    return logits, state, blocks, tmask


def penalty(patterns: dict[int, Tensor], dials: Sequence[float], blocks: Tensor, spec: BlockSpec
            ) -> Tensor:
    """sum_l lambda_l * Omega_l over the recorded layers (Omega: mean group-lasso per query).

    Query 0 is left out (it sees one key). Layers with lambda_l = 0 add nothing, not even 0 * x.
    """
    targets = target_blocks(blocks, spec.target)
    total = None
    for layer, pattern in sorted(patterns.items()):
        lam = float(dials[layer])
        if lam == 0.0:
            continue
        q_mask = torch.ones(blocks.shape, dtype=torch.bool, device=pattern.device)
        q_mask[:, 0] = False
        term = lam * group_lasso(pattern, blocks.to(pattern.device), targets.to(pattern.device),
                                 q_mask)
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


@torch.no_grad()
def evaluate_dial(model, windows: Int[Tensor, "n pos"], spec: BlockSpec,
                  dials: float | Sequence[float], strength: float = 2.0, batch_size: int = 8,
                  progress: bool = False) -> dict:
    """Locality and language-model metrics of `model` on `windows` with the dial at `dials`.

    Queries at position 0 (one visible key) are left out of the attention means. Returns the
    `LocalityMeter.result()` dict plus the dials used.
    """
    meter = LocalityMeter()
    was_training = model.hf_model.training
    model.hf_model.eval()
    try:
        for start in tqdm(range(0, len(windows), batch_size), desc="evaluating", unit="batch",
                          disable=not progress):
            ids = windows[start: start + batch_size]
            logits, state, _, tmask = dialled_forward(model, ids, spec, dials, strength,
                                                      record=True)
            qm = torch.ones(ids.shape, dtype=torch.bool)
            qm[:, 0] = False
            for layer, pattern in state.patterns.items():
                meter.update_attention(layer, pattern, tmask, qm)
            meter.update_lm(logits, ids)
    finally:
        model.hf_model.train(was_training)
    out = meter.result()
    out["dials"] = list(state.dials) if len(windows) else []
    return out
