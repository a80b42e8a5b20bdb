"""The registry of run kinds the explorer can render: kind -> its view module and page.

Adding a kind is one module `app/views/<kind>.py` (a `render(run)` function, optionally
`summary(run) -> dict`), one line in `KINDS`, and a three-line page in `app/pages/` that calls
`app.ui.kind_page("<kind>")`. Kinds without an entry are still listed on Home and shown by the
generic view (config, metrics, artefacts). See app/README.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class KindView:
    """How the explorer shows one run kind."""

    title: str  # what a person calls these runs (page and section titles)
    module: str  # the view module, with `render(run)` and optionally `summary(run)`
    page: str  # the page file under app/ that shows one run of this kind (Home links to it)
    metrics: tuple[str, ...] = ()  # key metrics shown in Home's table, in this order


KINDS: dict[str, KindView] = {
    "activations": KindView("Activation stores", "app.views.activations",
                            "pages/1_Activation_stores.py",
                            ("rows", "tokens_seen", "shards", "tokens_per_s")),
    "sae": KindView("SAEs and transcoders", "app.views.sae", "pages/2_SAEs.py",
                    ("fvu", "l0", "dead_frac", "ce_loss_score", "steps")),
    "features": KindView("Feature browser", "app.views.features", "pages/3_Feature_browser.py",
                         ("d_sae", "n_tokens", "dead_frac", "median_density")),
    "probe": KindView("Linear probes", "app.views.probe", "pages/4_Probes.py",
                      ("best_layer", "best_val_acc", "best_selectivity", "majority_acc")),
    "lens": KindView("Logit and tuned lens", "app.views.lens", "pages/5_Lenses.py",
                     ("kl_logit_mid", "kl_tuned_mid", "kl_logit_mean", "kl_tuned_mean")),
    "geometry": KindView("Layer geometry", "app.views.geometry", "pages/6_Layer_geometry.py",
                         ("linearity_mean", "linearity_min", "intrinsic_dim_max",
                          "anisotropy_max")),
    "graph": KindView("Attribution graphs", "app.views.graph", "pages/7_Attribution_graphs.py",
                      ("n_features", "kept_nodes", "replacement_score", "completeness_score")),
    "localist": KindView("Locality dial", "app.views.localist", "pages/8_Locality_dial.py",
                         ("best", "best_perplexity", "entropy_drop_bits", "fidelity_gain")),
    "linearise": KindView("Linearisation", "app.views.linearise", "pages/10_Linearisation.py",
                          ("predicted", "rel_error", "stable_rank", "sigma_max")),
    "atoms": KindView("Atoms", "app.views.atoms", "pages/11_Atoms.py",
                      ("atoms_q_star_quantile", "features_q_star_quantile", "atoms_r2_aip")),
    "codebook": KindView("Codebooks", "app.views.codebook", "pages/12_Codebooks.py",
                         ("transition_accuracy", "state_purity", "delta_ce", "steered_share")),
    # one line per further kind, e.g.
    # "probe": KindView("Probes", "app.views.probe", "pages/4_Probes.py", ("accuracy",)),
}

GENERIC = KindView("Other runs", "app.views.generic", "pages/9_All_runs.py")


def kind_view(kind: str) -> KindView:
    """The registry entry of `kind`, or the generic one for kinds nobody registered."""
    return KINDS.get(kind, GENERIC)


def view_module(kind: str) -> ModuleType:
    """Import a kind's view lazily, so one broken view never breaks Home or other pages."""
    return importlib.import_module(kind_view(kind).module)
