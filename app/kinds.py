"""The registry of run kinds the explorer shows: one line per kind.

A line names the kind (its folder under `runs/`), the title of its page, and the key metrics
Home shows for it; its view is the module `app/views/<kind>.py` (a `render(run)` function).
`app/navigation.py` builds one page per line, Home lists the runs of every kind, and the tests
render every page on real and hostile workspaces, so adding a kind is one view module and one
line here (see app/README.md). Kinds without a line are still listed on Home and shown by the
generic view on the "All runs" page.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class KindView:
    """How the explorer shows one run kind."""

    kind: str  # the folder under runs/ (and `kind` in run.json)
    title: str  # what a person calls these runs (page title, Home's section)
    metrics: tuple[str, ...] = ()  # key metrics for Home's table and the run header, in order
    url: str = ""  # the page's URL path; default: the title with '_' for spaces
    view: str = ""  # the module with render(run); default: app.views.<kind> ('-' -> '_')

    @property
    def url_path(self) -> str:
        return self.url or re.sub(r"[^A-Za-z0-9_-]+", "_", self.title).strip("_")

    @property
    def module(self) -> str:
        return self.view or f"app.views.{self.kind.replace('-', '_')}"


def _registry(*views: KindView) -> dict[str, KindView]:
    out: dict[str, KindView] = {}
    for v in views:
        if v.kind in out or any(v.url_path == o.url_path for o in out.values()):
            raise ValueError(f"Run kind {v.kind!r} (page /{v.url_path}) is registered twice.")
        out[v.kind] = v
    return out


KINDS: dict[str, KindView] = _registry(
    KindView("activations", "Activation stores", ("rows", "tokens_seen", "shards", "tokens_per_s")),
    KindView("sae", "SAEs and transcoders", ("fvu", "l0", "dead_frac", "ce_loss_score", "steps"),
             url="SAEs"),
    KindView("features", "Feature browser", ("d_sae", "n_tokens", "dead_frac", "median_density")),
    KindView("probe", "Linear probes",
             ("best_layer", "best_val_acc", "best_selectivity", "majority_acc"), url="Probes"),
    KindView("lens", "Logit and tuned lens",
             ("kl_logit_mid", "kl_tuned_mid", "kl_logit_mean", "kl_tuned_mean"), url="Lenses"),
    KindView("geometry", "Layer geometry",
             ("linearity_mean", "linearity_min", "intrinsic_dim_max", "anisotropy_max")),
    KindView("graph", "Attribution graphs",
             ("n_features", "kept_nodes", "replacement_score", "completeness_score")),
    KindView("localist", "Locality dial",
             ("best", "best_perplexity", "entropy_drop_bits", "fidelity_gain")),
    KindView("linearise", "Linearisation", ("predicted", "rel_error", "stable_rank", "sigma_max")),
    KindView("atoms", "Atoms",
             ("atoms_q_star_quantile", "features_q_star_quantile", "atoms_r2_aip")),
    KindView("codebook", "Codebooks",
             ("transition_accuracy", "state_purity", "delta_ce", "steered_share")),
    KindView("circuit", "Circuit discovery",
             ("best_auroc", "best_auroc_method", "best_cpr_node", "best_cpr_method")),
    # one entry per further kind
)

# the "All runs" page: any run, through its kind's view or this one
GENERIC = KindView("*", "All runs", view="app.views.generic")


def kind_view(kind: str) -> KindView:
    """The registry entry of `kind`, or the generic one for kinds nobody registered."""
    return KINDS.get(kind, GENERIC)


def view_module(kind: str) -> ModuleType:
    """Import a kind's view lazily, so one broken view never breaks Home or other pages."""
    return importlib.import_module(kind_view(kind).module)
