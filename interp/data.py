"""Corpora and token packing: documents from a source, packed into fixed-length token windows.

A `CorpusSpec` names where the text comes from (the CPython docs/stdlib that ship with every
Python, local .txt/.jsonl/.parquet files, or a Hugging Face dataset); `iter_documents` yields its
documents in a deterministic order; `pack_documents` tokenises them in batches and cuts the stream
into windows of exactly `context_size` tokens, each starting with one BOS token when asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.config import Config
from interp.errors import ConfigError, DataError, unknown_name_message

if TYPE_CHECKING:
    from jaxtyping import Int
    from torch import Tensor

log = logging.getLogger(__name__)

# Directories of the standard library that are not library source (tests, installed packages,
# build config) and files whose content depends on the machine (_sysconfigdata holds build paths).
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_HF_SHUFFLE_BUFFER = 10_000


@dataclass(frozen=True)
class CorpusSpec(Config):
    """Where the text comes from and which documents of it to use (serialised into every run)."""

    source: str = "cpython"  # a built-in name, a local file/directory, or "hf:<dataset>"
    text_field: str = "text"  # .jsonl key / .parquet column / HF dataset column with the text
    split: str = "train"  # HF dataset split
    data_files: str | None = None  # HF `data_files` (e.g. source "hf:json" + a local .jsonl)
    doc_separator: str | None = None  # split .txt files into documents on this string
    max_docs: int | None = None  # stop after this many (non-empty) documents
    shuffle_docs: bool = False  # shuffle document order (HF: approximate, buffered)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("CorpusSpec.source must be a non-empty string "
                              f"(one of {', '.join(BUILTIN_SOURCES)}, a path, or 'hf:<dataset>').")
        if self.max_docs is not None and self.max_docs < 1:
            raise ConfigError(f"CorpusSpec.max_docs must be >= 1 or None, got {self.max_docs}.")
        if self.doc_separator == "":
            raise ConfigError("CorpusSpec.doc_separator must be a non-empty string or None.")


# ---------------------------------------------------------------------------------------------
# Sources: each yields raw documents (possibly empty) in a fixed order.


def _python_docs(spec: CorpusSpec) -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise DataError("This Python has no `pydoc_data` (some distributions strip it); "
                        "install the full standard library or use source='python-stdlib'.") from e
    for name in sorted(topics):
        yield topics[name]


def stdlib_files() -> list[Path]:
    """The standard library's .py files (no tests, site-packages or caches), sorted by rel. path."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"The standard library directory {str(root)!r} does not exist.")
    rel: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if d not in _STDLIB_SKIP_DIRS and not d.startswith("config-")]
        for f in filenames:
            if f.endswith(".py") and not f.startswith("_sysconfigdata"):
                rel.append(Path(dirpath, f).relative_to(root).as_posix())
    return [root / r for r in sorted(rel)]


def _python_stdlib(spec: CorpusSpec) -> Iterator[str]:
    for path in stdlib_files():
        yield path.read_text(encoding="utf-8", errors="replace")


def _cpython(spec: CorpusSpec) -> Iterator[str]:
    yield from _python_docs(spec)
    yield from _python_stdlib(spec)


BUILTIN_SOURCES: dict[str, Callable[[CorpusSpec], Iterator[str]]] = {
    "cpython": _cpython,
    "python-docs": _python_docs,
    "python-stdlib": _python_stdlib,
}


def _read_txt(path: Path, spec: CorpusSpec) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    yield from (text.split(spec.doc_separator) if spec.doc_separator else [text])


def _read_jsonl(path: Path, spec: CorpusSpec) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno} is not valid JSON ({e.msg}).") from e
            if not isinstance(obj, dict) or spec.text_field not in obj:
                keys = list(obj) if isinstance(obj, dict) else type(obj).__name__
                raise DataError(f"{path}:{lineno} has no field {spec.text_field!r} (found {keys}); "
                                "set CorpusSpec.text_field.")
            yield str(obj[spec.text_field] or "")


def _read_parquet(path: Path, spec: CorpusSpec) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if spec.text_field not in names:
        raise DataError(f"{path} has no column {spec.text_field!r} (columns: {names}); "
                        "set CorpusSpec.text_field.")
    for batch in pf.iter_batches(columns=[spec.text_field], batch_size=1024):
        yield from (t or "" for t in batch.column(0).to_pylist())


FILE_READERS: dict[str, Callable[[Path, CorpusSpec], Iterator[str]]] = {
    ".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet,
}


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix in FILE_READERS),
                       key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise DataError(f"Directory {str(path)!r} holds no {'/'.join(FILE_READERS)} files.")
        return files
    if path.suffix not in FILE_READERS:
        raise DataError(f"Cannot read {str(path)!r}: use a {', '.join(FILE_READERS)} file "
                        "or a directory of them.")
    return [path]


def _local_source(path: Path, spec: CorpusSpec) -> Iterator[str]:
    for file in _local_files(path):
        try:
            yield from FILE_READERS[file.suffix](file, spec)
        except OSError as e:
            raise DataError(f"Cannot read {str(file)!r}: {e}.") from e
        except DataError:
            raise
        except Exception as e:  # e.g. pyarrow's ArrowInvalid on a corrupt parquet file
            raise DataError(f"Cannot read {str(file)!r}: {type(e).__name__}: {e}.") from e


def _hf_source(name: str, spec: CorpusSpec) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(name, data_files=spec.data_files, split=spec.split,
                                   streaming=True)
    except Exception as e:
        raise DataError(f"Cannot load Hugging Face dataset {name!r} (split={spec.split!r}, "
                        f"data_files={spec.data_files!r}): {e}. Offline, point at local files "
                        "(e.g. source='hf:json' with data_files=...).") from e
    if spec.shuffle_docs:  # a full shuffle of a stream would read all of it first
        ds = ds.shuffle(seed=spec.seed, buffer_size=_HF_SHUFFLE_BUFFER)

    def rows() -> Iterator[str]:
        for row in ds:
            if spec.text_field not in row:
                raise DataError(f"Dataset {name!r} has no column {spec.text_field!r} (columns: "
                                f"{list(row)}); set CorpusSpec.text_field.")
            yield str(row[spec.text_field] or "")

    return rows()


def _looks_like_path(source: str) -> bool:
    return ("/" in source or os.sep in source or source.startswith((".", "~"))
            or Path(source).suffix in FILE_READERS)


def _open_source(spec: CorpusSpec) -> tuple[Iterator[str], str]:
    """The raw document iterator of `spec.source` and a description of it for messages."""
    source = spec.source
    if source in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[source](spec), f"built-in corpus {source!r}"
    if source.startswith("hf:"):
        return _hf_source(source[3:], spec), f"Hugging Face dataset {source[3:]!r}"
    path = Path(source).expanduser()
    if path.exists():
        _local_files(path)  # fail now, not at the first next(), on an unusable path
        return _local_source(path, spec), f"{str(path)!r}"
    if _looks_like_path(source):
        raise DataError(f"Corpus path {str(path)!r} does not exist; check the path "
                        f"(or use a built-in corpus: {', '.join(BUILTIN_SOURCES)}).")
    raise DataError(unknown_name_message(
        "corpus", source, BUILTIN_SOURCES,
        hint=f"Built-in corpora: {', '.join(BUILTIN_SOURCES)}; or give a local "
             ".txt/.jsonl/.parquet file or directory, or 'hf:<dataset>'."))


def iter_documents(spec: CorpusSpec) -> Iterator[str]:
    """The non-empty documents of `spec`, in a deterministic order (shuffled by `seed` if asked).

    Raises DataError at once for a missing path or unknown source, and at the end of iteration if
    the corpus held no non-empty document.
    """
    raw, what = _open_source(spec)

    def generate() -> Iterator[str]:
        docs: Iterable[str] = (d for d in raw if d.strip())
        if spec.shuffle_docs and not spec.source.startswith("hf:"):
            docs = list(docs)  # a true shuffle needs the whole list (the stdlib is ~12 MB)
            random.Random(spec.seed).shuffle(docs)
        n = 0
        for doc in itertools.islice(docs, spec.max_docs):
            n += 1
            yield doc
        if n == 0:
            raise DataError(f"Corpus {what} has no non-empty documents; add text or pick "
                            "another source.")

    return generate()


# ---------------------------------------------------------------------------------------------
# Packing.


def _bos_id(tokenizer) -> int:
    for attr in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    raise DataError("The tokenizer has neither a BOS nor an EOS token, so windows cannot start "
                    "with one; pass prepend_bos=False.")


def pack_documents(
    docs: Iterable[str], tokenizer, context_size: int, *, prepend_bos: bool = True,
    eos_between_docs: bool = True, batch_docs: int = 64,
) -> Iterator[Int[Tensor, " context_size"]]:
    """Tokenise `docs` in batches, join them into one stream and cut it into int64 windows.

    The stream has the tokenizer's EOS between documents (if `eos_between_docs` and it has one).
    With `prepend_bos` each window is `[BOS] + (context_size - 1)` stream tokens (BOS falls back to
    EOS); otherwise windows are consecutive `context_size` slices. The last partial window is
    dropped. Documents are read lazily, so stopping early stops tokenising.
    """
    if context_size < (2 if prepend_bos else 1):
        raise ConfigError(f"context_size must be >= {2 if prepend_bos else 1}, got {context_size}.")
    if batch_docs < 1:
        raise ConfigError(f"batch_docs must be >= 1, got {batch_docs}.")
    bos = _bos_id(tokenizer) if prepend_bos else None
    eos = getattr(tokenizer, "eos_token_id", None) if eos_between_docs else None
    body = context_size - 1 if prepend_bos else context_size
    buf: list[int] = []
    first = True
    docs = iter(docs)
    while batch := list(itertools.islice(docs, batch_docs)):
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            if eos is not None and not first:
                buf.append(eos)
            first = False
            buf.extend(ids)
        n = len(buf) // body
        if n == 0:
            continue
        windows = torch.tensor(buf[: n * body], dtype=torch.int64).view(n, body)
        del buf[: n * body]
        if bos is not None:
            windows = torch.cat([torch.full((n, 1), bos, dtype=torch.int64), windows], dim=1)
        yield from windows.unbind(0)


def _windows(spec: CorpusSpec, tokenizer, context_size: int, n_tokens: int | None,
             prepend_bos: bool) -> tuple[Iterator[Tensor], int | None]:
    """The corpus's windows, capped at ceil(n_tokens / context_size), and that cap."""
    if n_tokens is not None and n_tokens < 1:
        raise ConfigError(f"n_tokens must be >= 1 or None, got {n_tokens}.")
    cap = None if n_tokens is None else math.ceil(n_tokens / context_size)
    windows = pack_documents(iter_documents(spec), tokenizer, context_size,
                             prepend_bos=prepend_bos)
    return itertools.islice(windows, cap), cap


def token_windows(
    spec: CorpusSpec, tokenizer, context_size: int, n_tokens: int | None = None, *,
    prepend_bos: bool = True, progress: bool = False,
) -> Int[Tensor, "n_windows context_size"]:
    """All windows of the corpus (or ceil(n_tokens / context_size) of them) as one tensor."""
    from tqdm.auto import tqdm

    windows, cap = _windows(spec, tokenizer, context_size, n_tokens, prepend_bos)
    rows = list(tqdm(windows, total=cap, unit="window", desc="tokenising", disable=not progress))
    if not rows:
        raise DataError(f"Corpus {spec.source!r} yields fewer than {context_size} tokens, not even "
                        "one window; use more text or a smaller context_size.")
    if cap is not None and len(rows) < cap:
        log.warning("Corpus %r gave %d windows of %d tokens, fewer than the %d asked for.",
                    spec.source, len(rows), context_size, cap)
    return torch.stack(rows)


def iter_token_batches(
    spec: CorpusSpec, tokenizer, context_size: int, batch_size: int, n_tokens: int | None = None,
    *, prepend_bos: bool = True, skip_windows: int = 0,
) -> Iterator[Int[Tensor, "batch context_size"]]:
    """Stream the windows of `token_windows` in batches (the last may be smaller).

    `skip_windows` drops the first windows (a resumed job's finished work); `n_tokens` counts the
    skipped windows too, so a resumed job passes the same `n_tokens` as the first run.
    """
    if batch_size < 1 or skip_windows < 0:
        raise ConfigError(f"Need batch_size >= 1 and skip_windows >= 0, got {batch_size}, "
                          f"{skip_windows}.")
    windows, _ = _windows(spec, tokenizer, context_size, n_tokens, prepend_bos)
    windows = itertools.islice(windows, skip_windows, None)
    while batch := list(itertools.islice(windows, batch_size)):
        yield torch.stack(batch)


def corpus_fingerprint(spec: CorpusSpec, tokenizer_name: str, context_size: int,
                       prepend_bos: bool) -> str:
    """A short sha256 hex that changes whenever the token windows could (to check a resume).

    The built-in corpora depend on the Python version, so theirs is part of the fingerprint.
    """
    payload: dict[str, Any] = {"corpus": dataclasses.asdict(spec), "tokenizer": tokenizer_name,
                               "context_size": context_size, "prepend_bos": prepend_bos}
    if spec.source in BUILTIN_SOURCES:
        payload["python"] = "%d.%d.%d" % sys.version_info[:3]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
