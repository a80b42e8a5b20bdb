"""Feature analysis of a trained SAE / transcoder: streaming statistics, tables, feature pages.

Compute (one streaming pass, bounded memory; writes a run of kind "features")::

    from saes.features import features_run
    run = features_run("runs/sae/topk-4608", n_tokens=65_536)   # or CLI: interp features RUN --tokens N

Query (the API the explorer uses; DuckDB over Parquet, a page loads in milliseconds)::

    from saes.features import FeatureIndex
    idx = FeatureIndex(run.path)            # a features run dir (runs/features/<name>)
    idx.n_latents, idx.meta                 # int; dict (hook, model, n_tokens, hist_edges_log10, ...)
    page = idx.page(latent_id, n_contexts=None) -> FeaturePage
        # .density .log10_density .count .n_tokens .mean_act .mean_act_all .max_act
        # .quantiles {"q50","q90","q99"}; .hist_edges (activation values, len bins+1) .hist_counts
        # .contexts: list[Context(rank, act, window, position, center, tokens: list[str],
        #                          token_ids, acts: list[float])]  (acts per token of the window)
        # .top_logits / .bottom_logits: list[(token str, logit effect)]; .to_dict()
    idx.latents(order_by="density", descending=True, limit=None, min_density=0.0) -> list[dict]
    idx.log10_densities() -> np.ndarray [d_sae]
    idx.search(token: str, limit=20) -> list[{latent, hits, max_act, density}]
        # latents whose top contexts peak on that token

Figures (`saes.features.plots`): `fig_feature_page(page)`, `fig_activation_histogram(page)`,
`fig_logit_effects(page)`, `fig_density_all(idx.log10_densities())`, and
`contexts_html(page)` (the contexts with each token shaded by the latent's activation).

Tables: see `saes.features.index` (latents.parquet, contexts.parquet, vocab.parquet,
features.json).
"""

from saes.features.index import Context, FeatureIndex, FeaturePage, write_feature_tables
from saes.features.runs import demo_step, features_run, load_dictionary
from saes.features.stats import (FeatureAccumulator, FeatureStatsConfig, feature_stats,
                                 logit_effects, model_batches, store_batches)

__all__ = [
    "Context", "FeatureAccumulator", "FeatureIndex", "FeaturePage", "FeatureStatsConfig",
    "demo_step", "feature_stats", "features_run", "load_dictionary", "logit_effects",
    "model_batches", "store_batches", "write_feature_tables",
]
