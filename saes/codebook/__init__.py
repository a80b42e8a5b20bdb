"""Codebook features (Tamkin, Taufeeque, Goodman; arXiv 2310.17230): vector-quantised
bottlenecks at a model's hooks, the TokFSM experiment, code statistics and steering by codes.

Modules: `bottleneck` (the snap function and layer), `insert` (codebooks at hooks of a
HookedModel), `train` (fine-tune with codebooks, or train codebooks on activations), `fsm`
(the TokFSM generator), `fsm_model` (the small transformer and its training), `fsm_analysis`
(transition accuracy, purity, precision/recall, patching), `stats` (per-code counts, contexts,
code search), `steer` (generation with codes), `plots`, `runs` (workspace runs), `cli`.
"""

from saes.codebook.bottleneck import CodebookConfig, CodebookLayer, snap
from saes.codebook.insert import CodebookModel, insert_codebooks, load_codebooks, set_codes

__all__ = ["CodebookConfig", "CodebookLayer", "CodebookModel", "insert_codebooks",
           "load_codebooks", "set_codes", "snap"]
