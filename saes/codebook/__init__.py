"""Codebook features (Tamkin, Taufeeque, Goodman; arXiv 2310.17230): vector-quantised
bottlenecks at a model's hooks, the TokFSM experiment, code statistics and steering by codes.

Modules: `bottleneck` (the snap function and layer), `insert` (codebooks at hooks of a
HookedModel), `train` (fine-tune with codebooks, or fit codebooks to activations), `fsm`
(the TokFSM generator), `fsm_model` (the small transformer and its training), `fsm_analysis`
(transition accuracy, purity, precision/recall, patching), `stats` (per-code counts, contexts,
code search), `steer` (generation with codes), `topic` (steering a frozen model by one
residual-stream code: the default-model example), `plots`, `runs` (workspace runs, the demo
step), `cli`. The names below load lazily, so importing the package (the CLI does) stays cheap.
"""

_EXPORTS = {
    "CodebookConfig": "bottleneck", "CodebookLayer": "bottleneck", "snap": "bottleneck",
    "CodebookModel": "insert", "insert_codebooks": "insert", "load_codebooks": "insert",
    "set_codes": "insert", "CodebookTrainConfig": "train", "train_codebooks": "train",
    "TokFSM": "fsm", "FSMConfig": "fsm_model", "train_fsm_model": "fsm_model",
    "demo_step": "runs", "TopicSteerConfig": "topic", "topic_steer_run": "topic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"saes.codebook.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'saes.codebook' has no attribute {name!r}")
