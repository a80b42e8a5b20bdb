"""Circuit discovery: methods run side by side on models with known circuits and scored.

Methods (registry: `circuits.discovery.methods.METHODS`): exhaustive activation patching,
EAP, EAP-IG, ACDC, the discrete-SAE-code method of O'Neill & Bui and the patch-free dictionary
tracing of He et al. Scoring (`circuits.discovery.scoring`): MIB's faithfulness curves with CPR
and CMD, ROC AUC, precision and recall against a ground truth. Entry points:
`circuits.discovery.evaluate.discover_task`, the run kind "circuit" (`circuits.discovery.runs`),
`interp discover` (`circuits.discovery.cli`), figures in `circuits.discovery.plots`.
"""
