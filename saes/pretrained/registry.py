"""Names of pretrained dictionaries: SAELens's registry of releases and circuit-tracer's sets.

SAELens ships its registry as `pretrained_saes.yaml` inside the `sae-lens` package: each
release names a Hugging Face repo, the model it belongs to, a loader (`conversion_func`, our
"layout") and its ids, each id a path inside the repo. We read that file without importing
SAELens and keep a compact JSON copy in the interp cache (the YAML takes seconds to parse,
the JSON milliseconds). circuit-tracer's transcoder sets are Hub repos with a `config.yaml`;
`CIRCUIT_TRACER_SETS` names the published ones (any repo or local directory also works).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from interp.errors import ConfigError, ModelLoadError, unknown_name_message
from interp.io import atomic_write_bytes

log = logging.getLogger(__name__)

REGISTRY_FILE = "pretrained_saes.yaml"
CIRCUIT_TRACER = "circuit_tracer_set"  # the layout of a circuit-tracer transcoder set

#: circuit-tracer's published per-layer transcoder sets: name -> (Hub reference, model).
#: The names `gemma` and `llama` are circuit-tracer's own shortcuts.
CIRCUIT_TRACER_SETS: dict[str, tuple[str, str]] = {
    "gemma": ("mwhanna/gemma-scope-transcoders", "google/gemma-2-2b"),
    "llama": ("mntss/transcoder-Llama-3.2-1B", "meta-llama/Llama-3.2-1B"),
    "qwen3-0.6b": ("mwhanna/qwen3-0.6b-transcoders-lowl0", "Qwen/Qwen3-0.6B"),
    "qwen3-1.7b": ("mwhanna/qwen3-1.7b-transcoders-lowl0", "Qwen/Qwen3-1.7B"),
    "qwen3-4b": ("mwhanna/qwen3-4b-transcoders", "Qwen/Qwen3-4B"),
    "qwen3-8b": ("mwhanna/qwen3-8b-transcoders", "Qwen/Qwen3-8B"),
    "qwen3-14b": ("mwhanna/qwen3-14b-transcoders-lowl0", "Qwen/Qwen3-14B"),
    "llama-3.1-8b-instruct-crv": ("facebook/crv-8b-instruct-transcoders",
                                  "meta-llama/Llama-3.1-8B-Instruct"),
}

#: SAELens's TransformerLens-style model names -> Hugging Face ids (for loading the model of a
#: release and matching `--model`); names that already are Hub ids need no entry.
MODEL_IDS: dict[str, str] = {
    "gpt2-small": "gpt2", "pythia-70m-deduped": "EleutherAI/pythia-70m-deduped",
    "gemma-2b": "google/gemma-2b", "gemma-2b-it": "google/gemma-2b-it",
    "gemma-2-2b": "google/gemma-2-2b", "gemma-2-9b": "google/gemma-2-9b",
    "gemma-2-9b-it": "google/gemma-2-9b-it", "gemma-2-27b": "google/gemma-2-27b",
    "mistral-7b": "mistralai/Mistral-7B-v0.1", "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B", "qwen3-4b": "Qwen/Qwen3-4B", "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-14b": "Qwen/Qwen3-14B",
}


@dataclass(frozen=True)
class Release:
    """One release: a Hub repo of dictionaries for one model, read by one layout."""

    name: str
    repo_id: str
    model: str
    layout: str  # SAELens's conversion_func ("sae_lens" when it has none) or CIRCUIT_TRACER
    ids: dict[str, str] = field(default_factory=dict)  # id -> path in the repo
    neuronpedia: dict[str, str] = field(default_factory=dict)
    norm_scaling_factor: dict[str, float] = field(default_factory=dict)
    config_overrides: dict = field(default_factory=dict)
    source: str = "saelens"  # "saelens" | "circuit-tracer" | "hub" (a repo not in a registry)

    @property
    def transcoders(self) -> bool:
        """Whether the release holds transcoders (read MLP input, write MLP output)."""
        return self.layout in ("gemma_2_transcoder", "mwhanna_transcoder",
                               "mntss_clt_layer_transcoder", CIRCUIT_TRACER) or \
            any(p.startswith(("transcoder", "clt")) for p in self.ids.values())

    def to_dict(self) -> dict:
        return {"release": self.name, "repo_id": self.repo_id, "model": self.model,
                "layout": self.layout, "n_ids": len(self.ids), "source": self.source,
                "transcoders": self.transcoders}


@dataclass(frozen=True)
class Entry:
    """One dictionary of a release: where its files are and how to read them."""

    release: str
    sae_id: str
    repo_id: str
    path: str  # folder or file inside the repo
    model: str
    layout: str
    revision: str | None = None
    neuronpedia: str | None = None
    norm_scaling_factor: float | None = None
    config_overrides: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.sae_id!r} of release {self.release!r} (Hub repo {self.repo_id!r}, " \
               f"path {self.path!r})"

    def to_dict(self) -> dict:
        return {"release": self.release, "sae_id": self.sae_id, "repo_id": self.repo_id,
                "path": self.path, "model": self.model, "layout": self.layout,
                "revision": self.revision, "neuronpedia": self.neuronpedia}


# ============================================================== SAELens's registry
def saelens_registry_path() -> Path:
    """`pretrained_saes.yaml` inside the installed sae-lens package (found without importing
    SAELens, whose import is slow and pulls in TransformerLens)."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("SAELens's registry of pretrained releases comes with the sae-lens "
                             "package, which is not installed: pip install sae-lens.")
    path = Path(next(iter(spec.submodule_search_locations))) / REGISTRY_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the sae-lens package; reinstall it.")
    return path


def _compact(data: dict) -> dict:
    """The parts of the YAML we use, as JSON-able data."""
    out = {}
    for name, value in data.items():
        saes = []
        for s in value.get("saes") or []:
            saes.append([str(s["id"]), str(s["path"]), s.get("neuronpedia"),
                         s.get("norm_scaling_factor")])
        out[str(name)] = {"repo_id": value["repo_id"], "model": value["model"],
                          "layout": value.get("conversion_func") or "sae_lens",
                          "config_overrides": value.get("config_overrides") or {}, "saes": saes}
    return out


def _cache_root() -> Path:
    """interp's cache (`$INTERP_CACHE` or the user cache dir), as in
    `interp.models.loading.cache_dir`, which is not imported here: it pulls in torch, and
    listing the registry should not."""
    if os.environ.get("INTERP_CACHE"):
        return Path(os.environ["INTERP_CACHE"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("interp"))


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data).encode())


def _read_saelens_registry(path: Path) -> dict:
    """The compact registry, from the JSON copy in the cache when it matches the YAML."""
    st = path.stat()
    cached = _cache_root() / "pretrained" / f"saelens-registry-{st.st_size}-{st.st_mtime_ns}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text())
        except (OSError, ValueError):
            log.warning("Ignoring an unreadable registry copy at %s.", cached)
    import yaml

    log.info("Reading SAELens's registry %s once (cached as %s).", path, cached)
    with path.open() as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    compact = _compact(data)
    try:
        _write_json_atomic(cached, compact)
    except OSError as e:  # a read-only cache costs time, not correctness
        log.warning("Could not cache the registry at %s (%s).", cached, e)
    return compact


@functools.cache
def releases() -> dict[str, Release]:
    """Every named release: SAELens's registry, then circuit-tracer's transcoder sets."""
    out: dict[str, Release] = {}
    for name, v in _read_saelens_registry(saelens_registry_path()).items():
        ids = {s[0]: s[1] for s in v["saes"]}
        out[name] = Release(
            name=name, repo_id=v["repo_id"], model=v["model"], layout=v["layout"], ids=ids,
            neuronpedia={s[0]: s[2] for s in v["saes"] if s[2]},
            norm_scaling_factor={s[0]: float(s[3]) for s in v["saes"] if s[3] is not None},
            config_overrides=v["config_overrides"])
    for name, (ref, model) in CIRCUIT_TRACER_SETS.items():
        out[name] = Release(name=name, repo_id=ref, model=model, layout=CIRCUIT_TRACER,
                            source="circuit-tracer")
    return out


def get_release(name: str) -> Release:
    """A release by name; a misspelt name gets the closest names."""
    table = releases()
    if name in table:
        return table[name]
    raise unknown_release(name)


def unknown_release(name: str) -> ConfigError:
    """The error for a name that is no release, listing the closest release names."""
    return ConfigError(unknown_name_message(
        "pretrained release", name, releases(),
        hint="List them with `interp pretrained list` (add --model M to filter); an HF repo "
             "id ('org/name') in the SAELens layout also works as a release."))


def entry(release: str, sae_id: str, revision: str | None = None) -> Entry:
    """The entry of `sae_id` in `release`. A release that is not in the registry but looks
    like a Hub repo id is read as a SAELens-layout repo whose `sae_id` is a folder in it."""
    table = releases()
    if release not in table and "/" in release:
        return Entry(release=release, sae_id=sae_id, repo_id=release, path=sae_id, model="",
                     layout="sae_lens", revision=revision)
    rel = get_release(release)
    if rel.layout == CIRCUIT_TRACER:
        raise ConfigError(f"{release!r} is a circuit-tracer transcoder set, not one dictionary: "
                          "load it with circuits.pretrained.load_pretrained_transcoders "
                          f"({release!r}) or `interp pretrained get {release}`.")
    if sae_id not in rel.ids:
        raise ConfigError(unknown_name_message(
            f"id in release {release!r}", sae_id, rel.ids,
            hint=f"It has {len(rel.ids)} ids; list them with `interp pretrained list "
                 f"--release {release}`."))
    overrides = dict(rel.config_overrides)
    return Entry(release=release, sae_id=sae_id, repo_id=rel.repo_id, path=rel.ids[sae_id],
                 model=rel.model, layout=rel.layout,
                 revision=revision or overrides.pop("revision", None),
                 neuronpedia=rel.neuronpedia.get(sae_id),
                 norm_scaling_factor=rel.norm_scaling_factor.get(sae_id),
                 config_overrides=overrides)


# ============================================================== models
def model_id(name: str) -> str:
    """The Hugging Face id of a registry model name ('gpt2-small' -> 'gpt2')."""
    return MODEL_IDS.get(name, name)


def _model_key(name: str) -> str:
    return model_id(str(name)).rstrip("/").rsplit("/", 1)[-1].lower()


def same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same model ('gemma-2-2b' and 'google/gemma-2-2b', a
    local directory named like the model)."""
    return bool(a) and bool(b) and _model_key(a) == _model_key(b)


def list_pretrained(model=None) -> list[Release]:
    """Every named release, or those for `model` (a name, an HF id, a local directory or a
    loaded model), sorted by model then name."""
    rows = list(releases().values())
    if model is not None:
        name = getattr(model, "name", None) or getattr(model, "_name_or_path", None) or str(model)
        rows = [r for r in rows if same_model(r.model, name)]
    return sorted(rows, key=lambda r: (_model_key(r.model), r.name))
