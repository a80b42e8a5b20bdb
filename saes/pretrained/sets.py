"""Pretrained transcoder sets: one per-layer transcoder for each of several layers.

A set comes from a circuit-tracer repo or directory (`config.yaml` + per-layer files; the
names `gemma`, `llama`, ... of `CIRCUIT_TRACER_SETS`, any `org/repo[/subfolder][@revision]`,
or a local directory) or from a SAELens transcoder release, one id per layer (`select` picks
among several per layer, e.g. `"transcoder/layer_{layer}_width_16k_l0_big"`). The attribution
graph code (`circuits.pretrained`) wraps the result in its `TranscoderSet`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from interp.errors import ConfigError, PretrainedNotFound
from saes.base import SparseDictionary
from saes.pretrained.files import Need, list_files, locate
from saes.pretrained.hooks import check_output_hook, model_facts
from saes.pretrained.layouts.base import layer_of
from saes.pretrained.layouts.circuit_tracer import (CONFIG, DEFAULT_IN, DEFAULT_OUT, read_config,
                                                    transcoder_file)
from saes.pretrained.load import check_model, fetch_pretrained, run_name
from saes.pretrained.registry import (CIRCUIT_TRACER, get_release, model_id, releases,
                                      unknown_release)


@dataclass
class PretrainedSet:
    """`{layer: transcoder}` of a pretrained set, with where it came from."""

    by_layer: dict[int, SparseDictionary]
    source: str
    model: str
    config: dict = field(default_factory=dict)  # how it was found (recorded in run.json)

    @property
    def layers(self) -> list[int]:
        return sorted(self.by_layer)


def hub_ref(ref: str) -> tuple[str, str, str | None]:
    """(repo_id, subfolder, revision) of `org/repo[/sub/folder][@rev]` or an hf:// URI."""
    if ref.startswith("hf://"):
        u = urlparse(ref)
        repo, _, path = u.path.lstrip("/").partition("/")
        rev = (parse_qs(u.query).get("revision") or [None])[0]
        return f"{u.netloc}/{repo}", path, rev
    path, _, rev = ref.partition("@")
    parts = path.strip("/").split("/")
    if len(parts) < 2:
        raise ConfigError(f"{ref!r} is not a Hub reference ('org/repo[/subfolder][@revision]').")
    return "/".join(parts[:2]), "/".join(parts[2:]), rev or None


def load_pretrained_set(name: str | Path, *, layers: list[int] | None = None,
                        select: str | None = None, model=None, local_dir=None, cache_dir=None,
                        revision: str | None = None) -> PretrainedSet:
    """A transcoder set by name: a circuit-tracer set (name, Hub reference or directory) or a
    SAELens transcoder release. `layers` limits it (default: every layer the set has); `model`
    (HookedModel, transformers config or name) is checked against every transcoder."""
    name = str(name)
    known = releases()
    if name in known and known[name].layout == CIRCUIT_TRACER:
        repo, sub, rev = hub_ref(known[name].repo_id)
        out = _circuit_tracer_set(repo, sub, revision or rev, layers=layers, cache_dir=cache_dir,
                                  local_dir=local_dir, default_model=known[name].model,
                                  label=name)
    elif name in known:
        out = _saelens_set(name, layers, select, local_dir, cache_dir, revision)
    elif Path(name).is_dir():
        out = _circuit_tracer_set(name, "", None, layers=layers, local_dir=name,
                                  cache_dir=cache_dir)
    elif "/" in name:
        repo, sub, rev = hub_ref(name)
        out = _circuit_tracer_set(repo, sub, revision or rev, layers=layers, cache_dir=cache_dir,
                                  local_dir=local_dir)
    else:
        raise unknown_release(name)
    if model is not None:
        facts = model_facts(model)
        for layer, tc in out.by_layer.items():
            what = f"The transcoder of layer {layer} of set {out.source!r}"
            check_model(tc, model, out.model, what, facts=facts)
            check_output_hook(out.config.get("feature_output_hook", ""), facts[2], what)
    return out


# ============================================================== circuit-tracer repos and dirs
def _circuit_tracer_set(repo: str, sub: str, revision: str | None, *, layers, cache_dir,
                        local_dir=None, default_model: str = "", label: str = "") -> PretrainedSet:
    label = label or (f"{repo}/{sub}" if sub else repo)
    what = f"transcoder set {label!r}"
    prefix = f"{sub}/" if sub else ""
    where = dict(local_dir=local_dir, cache_dir=cache_dir, revision=revision)
    cfg_path = locate(repo, [Need.of(prefix + CONFIG)], what=what, folder=sub, **where)[0]
    cfg = read_config(cfg_path)
    kind = cfg.get("model_kind", "transcoder_set")
    if kind != "transcoder_set":
        raise ConfigError(f"{cfg_path}: model_kind {kind!r}; interp's attribution graphs use "
                          "per-layer transcoders ('transcoder_set'), not cross-layer ones.")
    hooks = {k: cfg.get(k) or d for k, d in (("feature_input_hook", DEFAULT_IN),
                                             ("feature_output_hook", DEFAULT_OUT))}
    model = str(cfg.get("model_name") or default_model)
    files = _set_files(repo, prefix, cfg, layers, what, where)
    out = {}
    for layer, (frepo, fname, frev, local) in sorted(files.items()):
        if Path(fname).is_absolute():  # circuit-tracer also takes absolute local paths
            path = Path(fname)
            if not path.is_file():
                raise PretrainedNotFound(f"{what} lists {fname} for layer {layer}; no such file.")
        else:
            fwhere = where if local else dict(local_dir=None, cache_dir=cache_dir, revision=frev)
            path = locate(frepo, [Need.of(fname)], what=f"layer {layer} of {what}", **fwhere)[0]
        out[layer] = transcoder_file(path, layer, model=model,
                                     input_hook=hooks["feature_input_hook"],
                                     output_hook=hooks["feature_output_hook"],
                                     activation=cfg.get("activation"), k=cfg.get("k"),
                                     scan=repo)
    config = {"kind": "circuit-tracer", "source": label, "repo_id": repo, "subfolder": sub,
              "revision": revision, **hooks, "activation": cfg.get("activation"),
              "k": cfg.get("k")}
    return PretrainedSet(out, label, model, config)


def _set_files(repo, prefix, cfg, layers, what, where) -> dict[int, tuple]:
    """layer -> (repo, repo-relative file, revision, in the set's own repo/dir?)."""
    listed = cfg.get("transcoders")
    if listed is not None:
        if layers is not None and (bad := [x for x in layers if not 0 <= x < len(listed)]):
            raise ConfigError(f"{what} lists {len(listed)} layers (0..{len(listed) - 1}); "
                              f"no layer {bad}.")
        out = {}
        for layer in (range(len(listed)) if layers is None else layers):
            ref = str(listed[layer])
            if ref.startswith("hf://"):
                frepo, fname, frev = hub_ref(ref)
                out[layer] = (frepo, fname, frev, False)
            elif Path(ref).is_absolute():
                out[layer] = (repo, ref, None, True)
            else:
                out[layer] = (repo, prefix + ref, where["revision"], True)
        return out
    if layers is None:
        names = list_files(repo, prefix + "layer_*.safetensors", what=what, **where)
        layers = sorted(int(m.group(1)) for n in names
                        if (m := re.search(r"layer_(\d+)\.safetensors$", n)))
        if not layers:
            raise ConfigError(f"{what} has no layer_{{i}}.safetensors files and no "
                              "'transcoders:' list in its config.yaml.")
    return {x: (repo, f"{prefix}layer_{x}.safetensors", where["revision"], True) for x in layers}


# ============================================================== SAELens transcoder releases
def _saelens_set(release, layers, select, local_dir, cache_dir, revision) -> PretrainedSet:
    rel = get_release(release)
    by_layer: dict[int, list[str]] = {}
    for sae_id, path in rel.ids.items():
        by_layer.setdefault(_id_layer(sae_id, path), []).append(sae_id)
    wanted = sorted(by_layer) if layers is None else list(layers)
    missing = [x for x in wanted if x not in by_layer]
    if missing:
        raise ConfigError(f"Release {release!r} has no transcoder for layers {missing}; it has "
                          f"layers {sorted(by_layer)}.")
    chosen = {}
    for layer in wanted:
        ids = by_layer[layer]
        if select is not None:
            sae_id = select.format(layer=layer)
        elif len(ids) == 1:
            sae_id = ids[0]
        else:
            template = re.sub(rf"(?<!\d){layer}(?!\d)", "{layer}", ids[0], count=1)
            raise ConfigError(f"Release {release!r} has {len(ids)} transcoders at layer {layer} "
                              f"({', '.join(ids[:6])}{', ...' if len(ids) > 6 else ''}); pick one "
                              f"per layer with select=, e.g. select={template!r}.")
        chosen[layer] = sae_id
    out = {layer: fetch_pretrained(release, sae_id, local_dir=local_dir, cache_dir=cache_dir,
                                   revision=revision).dictionary
           for layer, sae_id in chosen.items()}
    bad = [x for x, tc in out.items() if not tc.cfg.transcoder]
    if bad:
        raise ConfigError(f"Release {release!r} holds SAEs, not transcoders (layers {bad}); a "
                          "transcoder set needs dictionaries that map the MLP input to its "
                          "output.")
    config = {"kind": "saelens", "source": release, "repo_id": rel.repo_id, "ids": chosen,
              "revision": revision}
    return PretrainedSet(out, release, rel.model, config)


def _id_layer(sae_id: str, path: str) -> int:
    if sae_id.isdigit():
        return int(sae_id)
    return layer_of(sae_id, path, pattern=r"(?:layer[_s]?|blocks\.)(\d+)")


# ============================================================== the workspace
#: the run kind and layout that `circuits.transcoders.load_transcoders` reads
SET_KIND = "transcoders"


def save_pretrained_set_run(name: str | Path, *, out: str | Path | None = None,
                            workspace: str | Path | None = None, run: str | None = None,
                            layers: list[int] | None = None, select: str | None = None,
                            model=None, local_dir=None, cache_dir=None,
                            revision: str | None = None):
    """Write a pretrained set as a "transcoders" run: `layer_LL/sae/` (SAELens layout) per
    layer and run.json, the layout `interp attribute --transcoders DIR` reads; returns the run."""
    from interp.workspace import run_context
    from saes.formats import save_saelens

    got = load_pretrained_set(name, layers=layers, select=select, model=model,
                              local_dir=local_dir, cache_dir=cache_dir, revision=revision)
    run = run or run_name(Path(got.source).name if Path(got.source).is_dir() else got.source)
    config = {"model": str(model) if isinstance(model, (str, Path)) else model_id(got.model),
              "layers": got.layers, "pretrained": got.config}
    with run_context(SET_KIND, run, config, root=workspace, path=out) as r:
        artefacts = {}
        for layer, tc in got.by_layer.items():
            rel = f"layer_{layer:02d}/sae"
            save_saelens(tc, r.path / rel, metadata={"pretrained": got.config})
            artefacts[f"layer_{layer:02d}"] = rel
        r.finish(metrics={"layers": len(got.by_layer)}, artefacts=artefacts)
    return r
