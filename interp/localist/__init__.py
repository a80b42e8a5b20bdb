"""Locality-dial models: a tunable dial lambda in [0, 1] between distributed and localist attention.

In the spirit of J. Diederich's "Localist LLMs" papers ("A Mathematical Framework for Dynamic
Locality Control", arXiv 2510.09338; "Localist LLMs with Recruitment Learning", 2510.17358;
"AILA -- First Experiments with Localist Language Models", 2511.03559; "Progressive Localisation
in Localist LLMs", 2511.18375), built from their abstracts only.

PATENT NOTICE AND CLEAN-ROOM STATEMENT. The author states that the full Localist-LLM method is
covered by pending patent applications, and the author's demo code (JoDiederich/Localist-LLM) is
proprietary ("all rights reserved"). This package was NOT derived from that code, which was not
read or used. It is a clean-room construction from standard, published techniques only:

- a group-lasso penalty (Yuan & Lin 2006) on each query's attention mass over blocks of positions,
  weighted by lambda, added to the language-model loss during training (`metrics.group_lasso`);
- an additive, block-structured attention bias (the additive-bias technique of ALiBi / T5
  relative biases) scaled by lambda, which turns a trained model at inference without retraining
  (`dial.locality_dial`);
- per-layer dials, polynomial progressive schedules, and standard metrics (attention entropy in
  bits, attention mass on a target block, perplexity, accuracy).

It is labelled "Localist-style": it is not the papers' exact method, whose details are not public.
Users who plan commercial use should judge the patent situation for themselves.

Modules: `blocks` (semantic blocks, target blocks), `metrics` (entropy, fidelity, group lasso),
`dial` (bias, hooks, schedules), `evaluate` (dialled forward, evaluation), `train` (small model from
scratch), `finetune` (schedules on a pretrained model), `runs` (sweep and schedule runs, kind
"localist"), `plots` (`fig_*`), `cli` (`interp localist ...`), `demo` (`demo_step`).
"""

from __future__ import annotations

# Lazy, so `interp localist --help` (and `import interp.localist.cli`) does not import torch.
_LAZY = {
    "BlockSpec": "blocks", "block_ids": "blocks", "block_structure": "blocks",
    "target_mask": "blocks", "layer_dials": "dial", "locality_dial": "dial",
    "named_schedules": "dial", "progressive_schedule": "dial", "entropy_bits": "metrics",
    "group_lasso": "metrics", "pointer_fidelity": "metrics", "pointer_hit": "metrics",
    "dialled_forward": "evaluate", "evaluate_dial": "evaluate", "LocalistConfig": "train",
    "train_localist": "train", "ScheduleConfig": "finetune", "compare_schedules": "finetune",
    "run_sweep": "runs", "run_schedules": "runs", "demo_step": "demo",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"interp.localist.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'interp.localist' has no attribute {name!r}")
