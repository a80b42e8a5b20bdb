"""Every file reader on hostile input: truncated and bit-flipped files, wrong types, huge
declared sizes, path tricks.

A good artefact of each kind is written once (a real activation store of a tiny model, SAELens /
sparsify / dictionary_learning dictionaries, a graph, a checkpoint, a run.json, feature tables,
codebooks, a linearisation); each hypothesis example copies one, damages it and reads it back.
The property: the reader either returns or raises an `InterpError` that names the file's
directory; never another exception (a traceback from inside torch, safetensors, pyarrow or
duckdb), never a hang (every test runs under a timeout), never a huge allocation (sizes are
checked before anything is allocated).

Runs are bounded and deterministic: `derandomize=True`, no example database, modest
`max_examples`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp.errors import (BadFormat, CorruptFile, CorruptShard, InterpError, UnsafePath,
                           WorkspaceError)

pytestmark = pytest.mark.timeout(300)

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

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


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_llama_dir):
    """{kind: (a good directory, its reader)}; each reader is checked to load it."""
    root = tmp_path_factory.mktemp("good")
    out = {}
    for name, kind in KINDS.items():
        d = root / name
        kind.build(d, tiny_llama_dir)
        read = kind.read(tiny_llama_dir) if kind.needs_model else kind.read
        read(d)  # the undamaged artefact loads
        out[name] = (d, read)
    return out


def _files(d: Path) -> list[str]:
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


def _pick(d: Path, i: int) -> Path:
    files = _files(d)
    return d / files[i % len(files)]


# ----------------------------------------------------------------------- properties
@pytest.mark.parametrize("kind", list(KINDS))
@FAST
@given(which=st.integers(0, 1000), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_file_is_refused_naming_it(good, kind, which, cut):
    src, read = good[kind]
    with Damaged(src) as d:
        f = _pick(d, which)
        data = f.read_bytes()
        f.write_bytes(data[:int(len(data) * cut)])
        err = attempt(read, d)
        if f.suffix in (".safetensors", ".parquet"):  # binary files: every cut is fatal
            assert err is not None, f"{f.name} cut to {int(len(data) * cut)} bytes was read"


@pytest.mark.parametrize("kind", list(KINDS))
@FAST
@given(which=st.integers(0, 1000), pos=st.floats(0.0, 1.0, exclude_max=True),
       bit=st.integers(0, 7))
def test_a_bit_flip_is_read_or_refused_never_a_crash(good, kind, which, pos, bit):
    src, read = good[kind]
    with Damaged(src) as d:
        f = _pick(d, which)
        data = bytearray(f.read_bytes())
        if not data:
            return
        i = int(len(data) * pos)
        data[i] ^= 1 << bit
        f.write_bytes(bytes(data))
        err = attempt(read, d)
        if kind == "store" and f.name.startswith("shard-"):  # checksummed: always caught
            assert isinstance(err, CorruptShard)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


def _json_paths(obj, prefix=()):
    """Every key path into nested JSON objects/lists."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            yield prefix + (i,)
            yield from _json_paths(v, prefix + (i,))


@pytest.mark.parametrize("kind", list(KINDS))
@FAST
@given(which=st.integers(0, 1000), where=st.integers(0, 10_000), value=_json_values,
       delete=st.booleans())
def test_a_json_field_of_the_wrong_type_is_read_or_refused(good, kind, which, where, value,
                                                           delete):
    src, read = good[kind]
    with Damaged(src) as d:
        jsons = [d / f for f in _files(d) if f.endswith(".json")]
        if not jsons:
            return
        f = jsons[which % len(jsons)]
        obj = json.loads(f.read_text())
        paths = list(_json_paths(obj))
        if not paths:
            return
        path = paths[where % len(paths)]
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        f.write_text(json.dumps(obj))
        attempt(read, d)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_file_replaced_by_a_directory_fifo_or_empty_file_is_refused(good, kind):
    src, read = good[kind]
    for i in range(len(_files(src))):
        for make in ("dir", "fifo", "empty", "missing"):
            with Damaged(src) as d:
                f = _pick(d, i)
                f.unlink()
                if make == "dir":
                    f.mkdir()
                elif make == "fifo":
                    os.mkfifo(f)  # a reader that opens it without checking would block forever
                elif make == "empty":
                    f.write_bytes(b"")
                attempt(read, d)


# ----------------------------------------------------------------------- huge declared sizes
def _raw_safetensors(path: Path, header, data: bytes = b"") -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


@pytest.mark.parametrize("header", [
    {"a": {"dtype": "F32", "shape": [2**30, 2**30], "data_offsets": [0, 2**62]}},  # 2^62 bytes
    {"a": {"dtype": "F32", "shape": [2**58], "data_offsets": [0, 2**60]}},
    {"a": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}},  # wraps in int64
    {"a": {"dtype": "F32", "shape": [2**33, 2**31, 4], "data_offsets": [0, 0]}},
    {"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}},
    {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}},
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 16]}},
], ids=["2^62-bytes", "2^60-bytes", "int64-wrap", "int64-wrap-3d", "bool-dim", "float-dim",
        "three-offsets"])
def test_a_safetensors_header_declaring_more_than_the_file_is_refused(tmp_path, header):
    from interp.io import load_safetensors, mmap_safetensors

    f = _raw_safetensors(tmp_path / "x.safetensors", header, b"\0" * 8)
    with pytest.raises(CorruptFile, match="x.safetensors"):
        load_safetensors(f)
    with pytest.raises(CorruptShard, match="x.safetensors"):
        mmap_safetensors(f)


def test_a_header_length_of_2_to_the_60_is_refused(tmp_path):
    from interp.io import load_safetensors

    f = tmp_path / "x.safetensors"
    f.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CorruptFile, match="does not fit"):
        load_safetensors(f)


def test_a_sparse_terabyte_json_is_refused_before_it_is_read(tmp_path):
    from interp.io import read_json
    from interp.workspace import list_runs, load_run

    run = tmp_path / "runs" / "sae" / "big"
    run.mkdir(parents=True)
    with open(run / "run.json", "wb") as f:
        f.write(b'{"kind": "sae", "name": "big", "pad": "')
        f.truncate(10**12)  # a sparse file: 10^12 bytes declared, none on disk
    with pytest.raises(CorruptFile, match="more than"):
        read_json(run / "run.json")
    with pytest.raises(WorkspaceError, match="run.json"):
        load_run(run)
    (broken,) = list_runs(tmp_path)
    assert broken.status == "broken" and "more than" in broken.error


def test_deeply_nested_json_is_refused(tmp_path):
    from interp.io import read_json

    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFile, match="deep.json"):
        read_json(f, expect=None)


def _edit_json(path: Path, **changes) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def test_huge_sizes_declared_in_configs_are_refused_before_allocation(good):
    """Widths of 10^12 in cfg.json / codebooks.json / graph.json / a manifest are checked
    against the data on disk first (building the module would allocate terabytes, and a graph
    of 10^12 layers would loop for hours)."""
    src, read = good["saelens"]
    with Damaged(src) as d:
        cfg = json.loads((d / "cfg.json").read_text())
        cfg["d_sae"] = 10**12
        cfg["metadata"]["interp_config"]["d_sae"] = 10**12
        (d / "cfg.json").write_text(json.dumps(cfg))
        assert isinstance(attempt(read, d), BadFormat)
    src, read = good["sparsify"]
    with Damaged(src) as d:
        _edit_json(d / "cfg.json", num_latents=10**12)
        assert isinstance(attempt(read, d), BadFormat)
    src, read = good["graph"]
    with Damaged(src) as d:
        _edit_json(d / "graph.json", n_layers=10**12)
        assert isinstance(attempt(read, d), BadFormat)
    src, read = good["codebooks"]
    with Damaged(src) as d:
        meta = json.loads((d / "codebooks.json").read_text())
        (h,) = meta["hooks"]
        meta["hooks"][h]["config"]["n_codes"] = 10**12
        (d / "codebooks.json").write_text(json.dumps(meta))
        assert isinstance(attempt(read, d), BadFormat)
    src, read = good["store"]
    with Damaged(src) as d:
        m = json.loads((d / "manifest.json").read_text())
        m["n_rows"] = 10**12
        m["shards"][0]["rows"] = 10**12
        (d / "manifest.json").write_text(json.dumps(m))
        assert isinstance(attempt(read, d), BadFormat)


# ----------------------------------------------------------------------- path tricks
@pytest.mark.parametrize("name", ["../../outside.safetensors", "/etc/passwd",
                                  "shard-00000.safetensors/../../x", "sub/shard-00000.safetensors",
                                  "", 7])
def test_a_manifest_shard_name_that_leaves_the_store_is_refused(good, tmp_path, name):
    src, read = good["store"]
    with Damaged(src) as d:
        m = json.loads((d / "manifest.json").read_text())
        m["shards"][0]["file"] = name
        (d / "manifest.json").write_text(json.dumps(m))
        assert isinstance(attempt(read, d), UnsafePath)


def test_a_shard_symlinked_out_of_the_store_is_checked_like_any_shard(good, tmp_path):
    """A symlink to another file fails its checksum; a symlink to a device is not read."""
    src, read = good["store"]
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"\0" * 4096)
    for target in (outside, Path("/dev/zero")):
        with Damaged(src) as d:
            shard = d / "shard-00000.safetensors"
            shard.unlink()
            shard.symlink_to(target)
            assert isinstance(attempt(read, d), CorruptShard)


@pytest.mark.parametrize("rel", ["../../../../etc/passwd", "/etc/passwd", "..", "link/x", 5,
                                 None, ""])
def test_a_run_artefact_that_leaves_the_run_is_refused(good, tmp_path, rel):
    src, read = good["run"]
    with Damaged(src) as d:
        (d / "link").symlink_to(tmp_path)  # a directory symlinked out of the run
        _edit_json(d / "run.json", artefacts={"eval": rel})
        err = attempt(read, d)
        assert isinstance(err, WorkspaceError)
        if isinstance(rel, str) and rel:
            assert isinstance(err, UnsafePath)


def test_a_run_json_that_is_a_fifo_or_a_device_is_listed_as_broken_without_hanging(tmp_path):
    from interp.workspace import list_runs

    for i, target in enumerate(("fifo", "/dev/zero")):
        d = tmp_path / "runs" / "sae" / f"r{i}"
        d.mkdir(parents=True)
        if target == "fifo":
            os.mkfifo(d / "run.json")
        else:
            (d / "run.json").symlink_to(target)
    runs = list_runs(tmp_path)
    assert len(runs) == 2 and all(r.status == "broken" for r in runs)
    assert all("not a regular file" in r.error for r in runs)


def test_nan_and_infinite_checkpoint_scales_are_refused(good):
    src, read = good["checkpoint"]
    for bad in (math.nan, math.inf, -1.0, 0, "1", None):
        with Damaged(src) as d:
            meta = json.loads((d / "trainer.json").read_text())
            meta["scale_in"] = bad
            (d / "trainer.json").write_text(json.dumps(meta))
            assert isinstance(attempt(read, d), BadFormat)
