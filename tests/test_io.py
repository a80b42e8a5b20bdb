"""File helpers: atomic writes, sha256, and the memory-mapped safetensors reader."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from interp.errors import CorruptShard
from interp.io import (
    atomic_write_bytes,
    atomic_write_json,
    mmap_safetensors,
    read_json,
    save_safetensors_atomic,
    sha256_file,
)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --- atomic writes ----------------------------------------------------------------------------


def test_atomic_write_json_writes_sorted_json_and_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "m.json"  # parent directories are created
    atomic_write_json(path, {"b": [1, 2.5], "a": {"x": None}})
    assert read_json(path) == {"b": [1, 2.5], "a": {"x": None}}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys
    atomic_write_json(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert listing(path.parent) == ["m.json"]


def test_a_failed_json_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"version": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_json(path, {"version": 2, "bad": object()})  # json cannot serialise it
    assert path.read_bytes() == before and listing(tmp_path) == ["m.json"]


def test_a_write_failing_midway_removes_its_temp_file(tmp_path):
    path = tmp_path / "blob.bin"
    atomic_write_bytes(path, b"old contents")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # the temp file is open when the write fails
    assert path.read_bytes() == b"old contents" and listing(tmp_path) == ["blob.bin"]


def test_a_failing_rename_removes_its_temp_file(tmp_path):
    target = tmp_path / "is-a-dir"
    (target / "inside").mkdir(parents=True)  # os.replace onto a non-empty directory fails
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data written in full")
    assert listing(tmp_path) == ["is-a-dir"] and listing(target) == ["inside"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1000 + 17)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk=7) == hashlib.sha256(data).hexdigest()  # chunking is invisible


def test_save_safetensors_atomic_round_trips_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # not contiguous
    save_safetensors_atomic({"w": t}, path, metadata={"k": "v"})
    assert torch.equal(load_file(str(path))["w"], t)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"k": "v"}
    assert listing(tmp_path) == ["w.safetensors"]


# --- memory-mapped safetensors ----------------------------------------------------------------


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, 3.5e38])
    return {
        "f32": x,
        "f32_special": special,
        "bf16": (x * 100).to(torch.bfloat16),
        "bf16_special": special.to(torch.bfloat16),
        "f16": x.to(torch.float16),
        "f64": x.double(),
        "i32": torch.randint(-2**31, 2**31 - 1, (4, 3, 2), generator=g, dtype=torch.int32),
        "i64": torch.tensor([-2**62, 0, 2**62 + 1]),
        "i16": torch.tensor([[-32768, 32767]], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "row": torch.ones(1, 64),
    }


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality (NaN == NaN, -0.0 != 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


def test_mmap_safetensors_round_trips_every_dtype_exactly(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    got = mmap_safetensors(path)
    assert set(got) == set(tensors)  # __metadata__ is not a tensor
    for name, t in tensors.items():
        assert same_bits(got[name], t), name
    assert got["bf16"].dtype == torch.bfloat16 and got["scalar"].shape == ()
    assert got["empty"].shape == (0, 3)


def test_mmap_safetensors_reads_files_written_by_the_store_writer(tmp_path):
    tensors = {"blocks.0.hook_resid_post": torch.randn(10, 4).to(torch.bfloat16),
               "tokens": torch.arange(20, dtype=torch.int32).reshape(2, 10)}
    save_safetensors_atomic(tensors, tmp_path / "s.safetensors")
    got = mmap_safetensors(tmp_path / "s.safetensors")
    assert all(same_bits(got[k], v) for k, v in tensors.items())


def mapped_files() -> list[tuple[int, int, str]]:
    """(start, end, path) of this process's file-backed memory mappings (Linux)."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            out.append((lo, hi, parts[5]))
    return out


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_mmap_safetensors_maps_the_file_instead_of_copying_it(tmp_path):
    path = tmp_path / "big.safetensors"
    x = torch.arange(256 * 1024, dtype=torch.float32).reshape(512, 512)
    save_file({"x": x, "h": x[:4].to(torch.bfloat16)}, str(path))
    got = mmap_safetensors(path)
    maps = mapped_files()
    for name in ("x", "h"):  # the tensor's memory is a mapping of this very file
        ptr = got[name].data_ptr()
        owners = [p for lo, hi, p in maps if lo <= ptr < hi]
        assert owners == [str(path.resolve())], (name, owners)
    # and it is live: bytes changed in the file show through the tensor without re-reading
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    offsets = json.loads(path.read_bytes()[8:8 + header_len])["x"]["data_offsets"]
    with open(path, "r+b") as f:
        f.seek(8 + header_len + offsets[0] + 4 * 1000)
        f.write(struct.pack("<f", -7.25))
    assert float(got["x"].view(-1)[1000]) == -7.25
    assert float(got["x"].view(-1)[1001]) == 1001.0


def write_raw(path: Path, header, data: bytes = b"") -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def assert_corrupt_naming(path: Path):
    with pytest.raises(CorruptShard) as info:
        mmap_safetensors(path)
    assert str(path) in str(info.value)
    return info.value


def test_a_truncated_file_raises_corrupt_shard_naming_it(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"a": torch.randn(100), "b": torch.randn(50)}, str(good))
    data = good.read_bytes()
    for cut in [len(data) - 1, len(data) - 300, 40, 8, 3, 0]:  # data, header, length prefix
        bad = tmp_path / f"cut-{cut}.safetensors"
        bad.write_bytes(data[:cut])
        assert_corrupt_naming(bad)


def test_a_garbage_header_raises_corrupt_shard_naming_it(tmp_path):
    rnd = tmp_path / "random.safetensors"
    rnd.write_bytes(os.urandom(4096))  # a huge header length
    assert_corrupt_naming(rnd)
    assert_corrupt_naming(write_raw(tmp_path / "notjson.safetensors", b"{this is not json}" * 3))
    assert_corrupt_naming(write_raw(tmp_path / "binary.safetensors", b"\xff\xfe\x00\x81" * 8))
    zero = tmp_path / "zero.safetensors"
    zero.write_bytes(struct.pack("<Q", 0) + b"{}")
    assert_corrupt_naming(zero)


@pytest.mark.parametrize("header", [
    [1, 2],
    {"a": 1},
    {"a": {"dtype": "F32", "shape": [2]}},  # no data_offsets
    {"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 8]}},  # shape past the end
    {"a": {"dtype": "NOPE", "shape": [2], "data_offsets": [0, 8]}},
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},  # reads the header as data
    {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}},  # size != shape x itemsize
], ids=["list", "not-a-dict", "no-offsets", "shape-past-end", "unknown-dtype", "negative-offset",
        "size-mismatch"])
def test_a_header_of_the_wrong_shape_raises_corrupt_shard(tmp_path, header):
    """Valid JSON that is not a safetensors header is corruption too, not a TypeError."""
    assert_corrupt_naming(write_raw(tmp_path / "h.safetensors", header, b"\0" * 8))


def test_a_missing_file_raises_corrupt_shard_naming_it(tmp_path):
    err = assert_corrupt_naming(tmp_path / "shard-00007.safetensors")
    assert "missing" in str(err)
