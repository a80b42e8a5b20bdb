"""Atoms of language-model representations (Hu et al., "Towards Atoms of Large Language Models",
arXiv 2509.20784; the method is written up in docs/features.md, "Atoms").

- `saes.atoms.aip`: S~ = (E[kk^T] + ridge)^-1 (`estimate_metric`, centred or not), `whiten`,
  `aip`, `aip_cosine`, `angle_diagnostic` (Euclidean vs AIP angle histograms).
- `saes.atoms.coherence`: `unit_coherence` / `coherence` (mu), `rip_bound` ((K-1) mu),
  `uniqueness_bound` (1/(2K-1)), `q_star` (quantile / per_unit / per_sample forms),
  `faithfulness_r2` (Euclidean or AIP norm), `empirical_rip`.
- `saes.atoms.tsae`: `threshold_interval`, `threshold_sae` (W_dec = D, W_enc = D^T S~),
  `refit_codes`, `train_whitened_sae` (a JumpReLU SAE trained on whitened activations through
  the trainer, mapped back to raw space).
- `saes.atoms.recovery`: `omp`, `basis_pursuit`, `recovery_rate`.
- `saes.atoms.synthetic`: atoms with a known AIP coherence, K-sparse and Bernoulli codes.
- `saes.atoms.compare` / `saes.atoms.runs`: the neurons / features / atoms comparison
  (`AtomsConfig`, `atoms_run` -> a run of kind "atoms"; `demo_step`); CLI `interp atoms`.
- `saes.atoms.plots`: `fig_atoms_comparison`, `fig_angle_histograms`, `fig_coherence_histogram`.

Submodules are imported on use, so `import saes.atoms` stays light.
"""
