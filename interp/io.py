"""File helpers shared by every writer: atomic writes, checksums, memory-mapped safetensors.

Every file the toolkit writes goes through a temporary file and `os.replace`, so a crash or
Ctrl-C never leaves a half-written file under the final name. Every file it reads back goes
through a checked reader (`read_json`, `load_safetensors`, `mmap_safetensors`): a missing,
non-regular, truncated, oversized or malformed file is an `InterpError` naming it, raised before
anything the file declares is allocated (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from interp.errors import BadFormat, CorruptFile, CorruptShard, MissingFile

#: The largest JSON file a reader accepts (a manifest of 100k shards is ~20 MB): a bigger one
#: is refused before it is read, so a hostile or runaway file cannot exhaust memory.
MAX_JSON_BYTES = 256 << 20
#: safetensors' own limit on the header (the Rust reader refuses larger ones too).
MAX_SAFETENSORS_HEADER = 100_000_000

_ST_DTYPES = {
    "F64": (np.float64, None), "F32": (np.float32, None), "F16": (np.float16, None),
    "BF16": (np.int16, torch.bfloat16), "I64": (np.int64, None), "I32": (np.int32, None),
    "I16": (np.int16, None), "I8": (np.int8, None), "U8": (np.uint8, None), "BOOL": (np.bool_, None),
}


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without an exception: it is
    written to a temp file beside `path`, synced, then renamed over it (a failure or Ctrl-C
    removes the temp file and leaves `path` as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def regular_file_size(path: str | Path, what: str = "file", error=CorruptFile) -> int:
    """The size of `path` after following symlinks; `MissingFile` if it is not there and
    `error` if it is not a regular file (a directory, FIFO or device would block or never end
    a read)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingFile(f"{what} {path} is missing.") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or e}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file (a directory, pipe or device); "
                    "replace it with the file itself.")
    return st.st_size


def read_json(path: str | Path, *, expect: type | None = None,
              max_bytes: int = MAX_JSON_BYTES):
    """Parse a JSON file; every failure is an `InterpError` naming the file.

    `MissingFile` if it is not there; `CorruptFile` if it is not a regular file, is larger than
    `max_bytes` (checked before reading), is not UTF-8 JSON or nests too deeply; `BadFormat` if
    its top level is not of type `expect` (e.g. `dict` for a config; None: any JSON value).
    """
    size = regular_file_size(path, "JSON file")
    if size > max_bytes:
        raise CorruptFile(f"JSON file {path} is {size:,} bytes, more than the {max_bytes:,} a "
                          "file of its kind can be; it is not the file it should be (restore "
                          "it or run the command that writes it again).")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        obj = json.loads(data.decode("utf-8"))
    except OSError as e:
        raise CorruptFile(f"JSON file {path} cannot be read ({e.strerror or e}).") from e
    except UnicodeDecodeError as e:
        raise CorruptFile(f"{path} is not a UTF-8 text file (byte {e.start}); it is corrupt: "
                          "restore it or run the command that writes it again.") from e
    except json.JSONDecodeError as e:
        raise CorruptFile(f"{path} is not valid JSON ({e.msg}: line {e.lineno}, column "
                          f"{e.colno}); it is truncated or corrupt: restore it or run the "
                          "command that writes it again.") from e
    except RecursionError as e:
        raise CorruptFile(f"{path} nests JSON too deeply to be a file of this toolkit.") from e
    if expect is not None and not isinstance(obj, expect):
        raise BadFormat(f"{path} holds a JSON {type(obj).__name__}, not a JSON "
                        f"{'object' if expect is dict else expect.__name__}; it is not the file "
                        "it should be.")
    return obj


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
    with atomic_writer(path) as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name in names:
            t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
            if t.numel():
                f.write(memoryview(t.view(torch.uint8).numpy()))


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _safetensors_entries(path: Path, error, fix: str) -> tuple[int, dict]:
    """(offset of the data, validated header entries) of a safetensors file, read and checked
    before any tensor is allocated: every declared size must fit in the file."""
    try:
        size = regular_file_size(path, "safetensors file", error)
    except MissingFile as e:
        raise error(str(e)) from None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes is too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{path} is not a readable safetensors file ({e}); {fix}") from None
    base = 8 + n
    try:
        return base, _parse_header(header, size - base)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise error(f"{path} has a malformed safetensors header ({e}); {fix}") from None


def load_safetensors(path: str | Path, fix: str = "restore it or run the command that wrote it "
                     "again.") -> dict[str, torch.Tensor]:
    """Read a safetensors file into memory, after checking its header: `MissingFile` if it is
    not there, `CorruptFile` naming it (and saying `fix`) if it is truncated, bit-flipped or
    declares tensors larger than the file; never a deep library error or a huge allocation."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise MissingFile(f"{path} is missing; {fix}")
    _safetensors_entries(path, CorruptFile, fix)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
        raise CorruptFile(f"{path} is not a readable safetensors file ({e}); {fix}") from e


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Open a safetensors file as memory-mapped, read-only tensors (no copy, no unpickling).

    A missing or truncated file or a malformed header raises `CorruptShard` naming the file.
    """
    path = Path(path)
    base, entries = _safetensors_entries(
        path, CorruptShard, "delete it and re-run the same command to rebuild it.")
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
        shape = [_int(x) for x in info["shape"]]
        begin, end = (_int(x) for x in info["data_offsets"])
        count = math.prod(shape)  # exact: np.prod would wrap around on huge declared shapes
        if any(x < 0 for x in shape) or not 0 <= begin <= end:
            raise ValueError(f"tensor {name!r} has negative sizes or offsets")
        if end - begin != count * np.dtype(np_dtype).itemsize:
            raise ValueError(f"tensor {name!r}: {end - begin} bytes do not hold shape {shape}")
        if end > data_size:
            raise ValueError(f"tensor {name!r} ends past the end of the file (truncated)")
        entries[name] = (np_dtype, torch_view, shape, begin, count)
    return entries


def _int(x) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{x!r} is not an integer")
    return x


def _readonly_tensor(arr: np.memmap) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():  # torch warns that the memmap is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)
