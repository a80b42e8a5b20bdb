"""File readers against sizes a file declares but does not hold, and paths that would leave
their directory: a safetensors header declaring 2^60 bytes or a shape that wraps int64, a sparse
10^12-byte JSON, widths of 10^12 in configs, shard names with `..` or absolute paths, symlinks
out of a store or a run, a FIFO or `/dev/zero` where run.json belongs.

Each must be refused with a named `InterpError` before anything is allocated or read in full
(every test runs under a timeout, so a hang is a failure).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import pytest

from hostile_artefacts import Damaged, attempt, build_good
from interp.errors import BadFormat, CorruptFile, CorruptShard, UnsafePath, WorkspaceError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_llama_dir):
    return build_good(tmp_path_factory, tiny_llama_dir)


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
