"""Every file reader on damaged input: truncated and bit-flipped files, JSON fields of the wrong
type, a directory / FIFO / empty file where a file belongs.

A good artefact of each kind is written once (`hostile_artefacts.good`); each hypothesis example
copies one, damages it and reads it back. The property: the reader either returns or raises an
`InterpError` that names the file's directory; never another exception (a traceback from inside
torch, safetensors, pyarrow or duckdb), never a hang (every test runs under a timeout).

Runs are bounded and deterministic: `derandomize=True`, no example database, modest
`max_examples`. Huge declared sizes and path tricks are in tests/test_hostile_limits.py.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile_artefacts import KINDS, Damaged, attempt, build_good, files, pick
from interp.errors import CorruptShard

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_llama_dir):
    return build_good(tmp_path_factory, tiny_llama_dir)


# HOSTILE_EXAMPLES=500 searches deeper (minutes); the default keeps the suite fast
FAST = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", 25)), deadline=None,
                derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])



@pytest.mark.parametrize("kind", list(KINDS))
@FAST
@given(which=st.integers(0, 1000), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_file_is_refused_naming_it(good, kind, which, cut):
    src, read = good[kind]
    with Damaged(src) as d:
        f = pick(d, which)
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
        f = pick(d, which)
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
        jsons = [d / f for f in files(d) if f.endswith(".json")]
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
    for i in range(len(files(src))):
        for make in ("dir", "fifo", "empty", "missing"):
            with Damaged(src) as d:
                f = pick(d, i)
                f.unlink()
                if make == "dir":
                    f.mkdir()
                elif make == "fifo":
                    os.mkfifo(f)  # a reader that opens it without checking would block forever
                elif make == "empty":
                    f.write_bytes(b"")
                attempt(read, d)
