"""File helpers shared by every writer: atomic writes, checksums, memory-mapped safetensors.

Every file the toolkit writes goes through a temporary file and `os.replace`, so a crash or
Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from interp.errors import CorruptShard

_ST_DTYPES = {
    "F64": (np.float64, None), "F32": (np.float32, None), "F16": (np.float16, None),
    "BF16": (np.int16, torch.bfloat16), "I64": (np.int64, None), "I32": (np.int32, None),
    "I16": (np.int16, None), "I8": (np.int8, None), "U8": (np.uint8, None), "BOOL": (np.bool_, None),
}


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_ST_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> None:
    """Write tensors in the safetensors format, atomically, streaming each tensor's bytes from
    its own memory (a device tensor is copied to the host one at a time): no serialised copy
    of the whole file in memory, which the `safetensors` package makes (twice) and which, for
    a training checkpoint, would double the host memory of the weights and Adam state."""
    names = sorted(tensors)
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in _ST_NAMES:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for name in names:
                t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
                if t.numel():
                    f.write(memoryview(t.view(torch.uint8).numpy()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Open a safetensors file as memory-mapped, read-only tensors (no copy, no unpickling).

    A truncated file or a malformed header raises `CorruptShard` naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CorruptShard(f"Shard file {path} is missing.") from None
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise CorruptShard(f"Shard file {path} is corrupt ({e}); delete it and re-run the "
                           "same command to rebuild it.") from None
    base = 8 + n
    try:
        entries = _parse_header(header, size - base)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptShard(f"Shard file {path} has a malformed header ({e}); delete it and "
                           "re-run the same command to rebuild it.") from None
    out = {}
    for name, (np_dtype, torch_view, shape, begin, count) in entries.items():
        if count == 0:
            t = torch.from_numpy(np.zeros(shape, dtype=np_dtype))
        else:
            arr = np.memmap(path, dtype=np_dtype, mode="r", offset=base + begin, shape=(count,))
            t = _readonly_tensor(arr).reshape(shape)
        out[name] = t.view(torch_view) if torch_view is not None else t
    return out


def _parse_header(header, data_size: int) -> dict:
    """Validate a safetensors header: {name: (np dtype, torch view, shape, begin, count)}."""
    if not isinstance(header, dict):
        raise TypeError("the header is not a JSON object")
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {info['dtype']!r}")
        np_dtype, torch_view = _ST_DTYPES[info["dtype"]]
        shape = [int(x) for x in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape)) if shape else 1
        if any(x < 0 for x in shape) or not 0 <= begin <= end:
            raise ValueError(f"tensor {name!r} has negative sizes or offsets")
        if end - begin != count * np.dtype(np_dtype).itemsize:
            raise ValueError(f"tensor {name!r}: {end - begin} bytes do not hold shape {shape}")
        if end > data_size:
            raise ValueError(f"tensor {name!r} ends past the end of the file (truncated)")
        entries[name] = (np_dtype, torch_view, shape, begin, count)
    return entries


def _readonly_tensor(arr: np.memmap) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():  # torch warns that the memmap is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)
