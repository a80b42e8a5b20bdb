"""Loading one pretrained dictionary by release and id, and saving it into the workspace.

`load_pretrained("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")` finds
the release in the registry, its files (a local directory, else the HF cache, else the Hub),
reads them with the release's layout and, given a model, checks that the dictionary fits it.
`save_pretrained_run` writes it as a SAELens directory inside an SAE run (kind "sae") so the
feature statistics, the evaluation and the explorer work on it as on a trained one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from interp.errors import ConfigError
from saes.base import SparseDictionary
from saes.pretrained.files import locate
from saes.pretrained.hooks import check_fits, model_facts
from saes.pretrained.layouts import layout
from saes.pretrained.registry import Entry, entry, get_release, model_id, releases, same_model

log = logging.getLogger(__name__)


@dataclass
class Pretrained:
    """A loaded dictionary with where it came from."""

    dictionary: SparseDictionary
    entry: Entry
    files: list[Path]
    sparsity: Tensor | None = None  # SAELens's log10 firing frequencies, when the release has them


def resolve_entry(release: str, sae_id: str | None = None, revision: str | None = None) -> Entry:
    """The registry entry; `sae_id` may be left out for a release with one id."""
    if sae_id is None:
        if release not in releases():
            raise ConfigError(f"{release!r} is not a named release; give the SAE id (its folder "
                              "in the repo) as well.")
        ids = list(get_release(release).ids)
        if len(ids) != 1:
            raise ConfigError(f"Release {release!r} has {len(ids)} ids; name one (e.g. "
                              f"{ids[0]!r}). List them with `interp pretrained list --release "
                              f"{release}`.")
        sae_id = ids[0]
    return entry(release, sae_id, revision)


def fetch_pretrained(release: str, sae_id: str | None = None, *, model=None,
                     local_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                     revision: str | None = None) -> Pretrained:
    """Find, read and (given `model`) check one dictionary; see `load_pretrained`."""
    e = resolve_entry(release, sae_id, revision)
    lay = layout(e.layout)
    needs = lay.needs(e)
    paths = locate(e.repo_id, needs, what=e.describe(), folder=e.path, local_dir=local_dir,
                   cache_dir=cache_dir, revision=e.revision)
    sae = lay.read(e, paths)
    if model is not None:
        check_model(sae, model, e.model, e.describe())
    sparsity = None
    if lay.sparsity is not None and paths[lay.sparsity] is not None:
        from saes.formats import load_saelens_sparsity

        sparsity = load_saelens_sparsity(paths[lay.sparsity].parent)
    return Pretrained(sae, e, [p for p in paths if p is not None], sparsity)


def load_pretrained(release: str, sae_id: str | None = None, *, model=None,
                    local_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    revision: str | None = None, device: str = "cpu") -> SparseDictionary:
    """A pretrained SAE or transcoder by SAELens release and id, as one of our dictionaries.

    Files come from `local_dir` when given (the repo's layout, or the files of this one
    dictionary), else the Hugging Face cache (`cache_dir`, default HF's), else the Hub (only
    the files this dictionary needs; refused with a clear error under HF_HUB_OFFLINE=1).
    `model` (a HookedModel, a transformers config or a model name/directory) is checked: the
    dictionary's hooks must exist there with the dictionary's widths. A release that is not in
    the registry but is a Hub repo id is read as a SAELens-layout repo with `sae_id` its folder.
    """
    p = fetch_pretrained(release, sae_id, model=model, local_dir=local_dir,
                         cache_dir=cache_dir, revision=revision)
    return p.dictionary.to(device)


def check_model(dictionary: SparseDictionary, model, made_for: str, what: str,
                facts=None) -> None:
    """Widths and hooks must fit `model` (`ModelMismatch` otherwise); a different model name
    with the same shapes (an instruct variant, a local copy) is only logged. `facts` is
    `model_facts(model)` when the caller has it."""
    known = facts or model_facts(model)
    check_fits(dictionary, model, what=what, facts=known)
    facts = known[0]
    named = facts.name and facts.name != facts.model_type  # a config may carry no name
    if made_for and named and not same_model(made_for, facts.name):
        log.warning("%s was made for %r; using it with %r (the shapes fit).", what, made_for,
                    facts.name)


def run_name(*parts: str) -> str:
    """A valid run name from a release and an id ('layer_0/width_16k' -> 'layer_0-width_16k')."""
    name = "--".join(re.sub(r"[^A-Za-z0-9._+-]+", "-", p).strip("-.") for p in parts if p)
    return name.lstrip("-._+") or "pretrained"


def save_pretrained_run(release: str, sae_id: str | None = None, *, out: str | Path | None = None,
                        workspace: str | Path | None = None, name: str | None = None,
                        model: str | None = None, local_dir=None, cache_dir=None,
                        revision: str | None = None):
    """Load a pretrained dictionary and write it as an SAE run (`sae/` in the SAELens layout
    and run.json); returns the run. `model` (a name or directory) is checked and recorded as
    the run's model; by default the release's model is recorded (its Hub id)."""
    from interp.workspace import run_context
    from saes.formats import save_saelens

    p = fetch_pretrained(release, sae_id, model=model, local_dir=local_dir, cache_dir=cache_dir,
                         revision=revision)
    sae, e = p.dictionary, p.entry
    name = name or run_name(e.release, e.sae_id)
    config = {"sae": sae.cfg.to_dict(), "model": model or model_id(e.model), "activations": "",
              "pretrained": e.to_dict()}
    with run_context("sae", name, config, root=workspace, path=out) as run:
        meta = {"pretrained": e.to_dict()}
        if e.neuronpedia:
            meta["neuronpedia_id"] = e.neuronpedia
        save_saelens(sae, run.path / "sae", sparsity=p.sparsity, metadata=meta)
        run.finish(metrics={"d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae,
                            "transcoder": sae.cfg.transcoder},
                   artefacts={"sae": "sae"})
    return run
