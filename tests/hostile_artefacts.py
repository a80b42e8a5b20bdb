"""Good artefacts of every file kind the toolkit reads, their readers, and helpers to damage a
copy and read it back (shared by tests/test_hostile_files.py and tests/test_hostile_limits.py).

`build_good` writes one of each kind (once per session): a real activation store of a tiny model,
SAELens / sparsify / dictionary_learning dictionaries, a graph, a checkpoint, a run.json, feature
tables, codebooks, a linearisation; each reader is checked to load its undamaged artefact.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from interp.errors import InterpError

D_IN, D_SAE, K = 8, 16, 2


# ----------------------------------------------------------------------- good artefacts
def _store(d: Path, model_dir: Path) -> None:
    from interp.caching import cache_activations
    from interp.data import CorpusSpec
    from interp.models.loading import load_model
    from interp.store import StoreConfig

    cfg = StoreConfig(model=str(model_dir), hooks=("blocks.0.hook_resid_post",), n_tokens=64 * 8,
                      context_size=64, batch_size=4, shard_windows=4,
                      corpus=CorpusSpec(source="python-docs"))
    cache_activations(d, cfg, model=load_model(model_dir), progress=False)


def _sae():
    from saes.architectures import create_sae
    from saes.base import SAEConfig

    return create_sae(SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K), seed=0)


def _saelens(d: Path, _) -> None:
    from saes.formats import save_saelens

    save_saelens(_sae(), d, sparsity=torch.full((D_SAE,), -2.0))


def _sparsify(d: Path, _) -> None:
    from safetensors.torch import save_file

    d.mkdir(parents=True)
    (d / "cfg.json").write_text(json.dumps({"d_in": D_IN, "k": K, "num_latents": D_SAE}))
    g = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
               "encoder.bias": torch.zeros(D_SAE), "W_dec": torch.randn(D_SAE, D_IN, generator=g),
               "b_dec": torch.zeros(D_IN)}, str(d / "sae.safetensors"))


def _dictionary_learning(d: Path, _) -> None:
    from safetensors.torch import save_file

    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"trainer": {
        "dict_class": "AutoEncoderTopK", "k": K, "activation_dim": D_IN, "dict_size": D_SAE}}))
    g = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
               "encoder.bias": torch.zeros(D_SAE),
               "decoder.weight": torch.randn(D_IN, D_SAE, generator=g),
               "b_dec": torch.zeros(D_IN)}, str(d / "ae.safetensors"))


def _graph_obj():
    from circuits.graph import Graph

    n_feat, n_layers, n_pos, n_logits = 2, 2, 3, 1
    n_nodes = n_feat + n_layers * n_pos + n_pos + n_logits
    return Graph(prompt="ab", tokens=[0, 5, 6], token_strs=["<bos>", "a", "b"],
                 n_layers=n_layers, feat_layer=torch.tensor([0, 1]), feat_pos=torch.tensor([1, 2]),
                 feat_index=torch.tensor([3, 4]), activation=torch.tensor([0.5, 1.5]),
                 logit_tokens=torch.tensor([7]), logit_probs=torch.tensor([0.9]),
                 logit_strs=["c"], edge_target=torch.tensor([n_nodes - 1, 1]),
                 edge_source=torch.tensor([0, 0]), edge_weight=torch.tensor([0.25, 0.5]),
                 node_input=torch.zeros(n_nodes), node_fixed=torch.zeros(n_nodes),
                 metadata={"model": "tiny"})


def _graph(d: Path, _) -> None:
    _graph_obj().save(d)


def _opt_module():
    sae = _sae()
    return sae, torch.optim.Adam(sae.parameters(), lr=1e-3)


def _checkpoint(d: Path, _) -> None:
    from saes.checkpoint import write_checkpoint

    sae, opt = _opt_module()
    out = sae.training_loss(torch.randn(4, D_IN), torch.randn(4, D_IN),
                            dead=torch.zeros(D_SAE, dtype=torch.bool), sparsity_scale=1.0)
    out.loss.backward()
    opt.step()
    write_checkpoint(d, sae, opt, {"since_fired": torch.zeros(D_SAE, dtype=torch.long),
                                   "fired_count": torch.zeros(D_SAE, dtype=torch.long)},
                     {"step": 1, "scale_in": 1.0, "scale_out": 1.0, "config": {}})


def _run(d: Path, _) -> None:
    from interp.workspace import create_run

    run = create_run("sae", "r", {"a": 1}, path=d)
    (d / "eval.json").write_text("{}")
    run.finish(metrics={"fvu": 0.1}, artefacts={"eval": "eval.json"})


def _features(d: Path, _) -> None:
    from saes.features import write_feature_tables

    n_lat, top, C, bins = 4, 2, 5, 6
    rng = np.random.default_rng(0)
    stats = {"count": np.arange(n_lat), "density": np.linspace(0.1, 0.4, n_lat),
             "mean_act": np.ones(n_lat), "mean_act_all": np.ones(n_lat) / 2,
             "max_act": np.full(n_lat, 2.0), "q50": np.ones(n_lat), "q90": np.ones(n_lat),
             "q99": np.ones(n_lat), "hist": rng.integers(0, 9, (n_lat, bins)),
             "top_vals": rng.random((n_lat, top)) + 0.1,
             "top_window": rng.integers(0, 9, (n_lat, top)),
             "top_pos": rng.integers(0, 9, (n_lat, top)),
             "ctx_tokens": rng.integers(0, 3, (n_lat, top, C)),
             "ctx_acts": rng.random((n_lat, top, C)), "n_tokens": 100}
    meta = {"config": {"context_left": 2}, "hist_edges_log10": list(np.linspace(-3, 1, bins + 1))}
    write_feature_tables(d, stats, ["a", "b", "c"], meta)


def _codebooks(d: Path, model_dir: Path) -> None:
    from interp.models.loading import load_model
    from saes.codebook.bottleneck import CodebookConfig
    from saes.codebook.insert import insert_codebooks

    insert_codebooks(load_model(model_dir), ["blocks.0.hook_resid_post"],
                     CodebookConfig(n_codes=8, k=2)).save(d)


def _linearise(d: Path, _) -> None:
    from interp.io import atomic_write_json, save_safetensors_atomic

    d.mkdir(parents=True)
    atomic_write_json(d / "linearise.json", {"stable_rank": 1.5, "tokens": ["a"]})
    save_safetensors_atomic({"S": torch.ones(4)}, d / "tensors.safetensors")


def _read_store(d: Path):
    from interp.store import ActivationStore

    s = ActivationStore(d)
    return [s.shard(i) for i in range(s.n_shards)], s.activations(split="all")


def _read_graph(d: Path):
    from circuits.export import node_ids
    from circuits.graph import Graph

    g = Graph.load(d)
    return node_ids(g), g.completeness_error(), g.dense()


def _read_checkpoint(d: Path):
    from saes.checkpoint import read_checkpoint

    sae, opt = _opt_module()
    return read_checkpoint(d, sae, opt, {"since_fired": (D_SAE,), "fired_count": (D_SAE,)})


def _read_run(d: Path):
    from interp.workspace import load_run

    r = load_run(d)
    return [r.artefact(k) for k in r.artefacts]


def _read_features(d: Path):
    from saes.features import FeatureIndex

    idx = FeatureIndex(d)
    try:
        return idx.page(0), idx.latents(), idx.search("a"), idx.log10_densities()
    finally:
        idx.close()


def _read_codebooks(model_dir: Path):
    from interp.models.loading import load_model
    from saes.codebook.insert import load_codebooks

    model = load_model(model_dir)
    return lambda d: load_codebooks(model, d)


def _read_saelens(d: Path):
    from saes.formats import load_saelens, load_saelens_sparsity

    return load_saelens(d), load_saelens_sparsity(d)


def _read_sparsify(d: Path):
    from saes.formats import load_sparsify

    return load_sparsify(d)


def _read_dl(d: Path):
    from saes.formats import load_dictionary_learning

    return load_dictionary_learning(d)


def _read_linearise(d: Path):
    from interp.linearise.runs import load_linearisation

    return load_linearisation(d, tensors=True)


@dataclass
class Kind:
    build: Callable[[Path, Path], None]
    read: Callable  # read(dir), or a factory read(model_dir) -> read(dir) if `needs_model`
    needs_model: bool = False


KINDS = {
    "store": Kind(_store, _read_store),
    "saelens": Kind(_saelens, _read_saelens),
    "sparsify": Kind(_sparsify, _read_sparsify),
    "dictionary_learning": Kind(_dictionary_learning, _read_dl),
    "graph": Kind(_graph, _read_graph),
    "checkpoint": Kind(_checkpoint, _read_checkpoint),
    "run": Kind(_run, _read_run),
    "features": Kind(_features, _read_features),
    "codebooks": Kind(_codebooks, _read_codebooks, needs_model=True),
    "linearise": Kind(_linearise, _read_linearise),
}


_GOOD: dict = {}


def build_good(tmp_path_factory, model_dir: Path) -> dict:
    """{kind: (a good directory, its reader)}, built once per session; each reader is checked
    to load its artefact."""
    if _GOOD:
        return _GOOD
    root = tmp_path_factory.mktemp("good")
    out = _GOOD
    for name, kind in KINDS.items():
        d = root / name
        kind.build(d, model_dir)
        read = kind.read(model_dir) if kind.needs_model else kind.read
        read(d)  # the undamaged artefact loads
        out[name] = (d, read)
    return out


def files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def attempt(read, d: Path) -> InterpError | None:
    """Read `d`; None if it loaded, the `InterpError` if it was refused (which must name the
    directory). Any other exception fails the test with its traceback."""
    try:
        read(d)
    except InterpError as e:
        assert str(d) in str(e), f"the error does not name {d}: {e}"
        return e
    return None


class Damaged:
    """A fresh copy of a good artefact to damage (removed afterwards)."""

    def __init__(self, src: Path):
        self.root = Path(tempfile.mkdtemp(prefix="hostile-"))
        self.dir = self.root / src.name
        shutil.copytree(src, self.dir)

    def __enter__(self) -> Path:
        return self.dir

    def __exit__(self, *exc):
        shutil.rmtree(self.root, ignore_errors=True)


def pick(d: Path, i: int) -> Path:
    names = files(d)
    return d / names[i % len(names)]


