"""Tests of interp.data: corpus sources, errors, token packing, batching and fingerprints."""

from __future__ import annotations

import dataclasses
import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from interp.data import (
    CorpusSpec,
    corpus_fingerprint,
    iter_documents,
    iter_token_batches,
    pack_documents,
    stdlib_files,
    token_windows,
)
from interp.errors import ConfigError, DataError
from interp.models.tiny import char_tokenizer

DOCS = ["hello world", "abc", "The quick brown fox\njumps over the lazy dog.", "x" * 40, "end"]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def char_ids(tok, text: str) -> list[int]:
    """A naive reference tokenisation: one id per character."""
    return [tok.convert_tokens_to_ids(c) for c in text]


def reference_stream(tok, docs, eos=True) -> list[int]:
    stream: list[int] = []
    for i, d in enumerate(docs):
        if eos and i:
            stream.append(tok.eos_token_id)
        stream.extend(char_ids(tok, d))
    return stream


def write_jsonl(path: Path, texts, field="text") -> Path:
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture()
def many_docs_jsonl(tmp_path):
    return write_jsonl(tmp_path / "many.jsonl", [f"document number {i} " * (1 + i % 3)
                                                 for i in range(30)])


# --- built-in corpora -------------------------------------------------------------------------


def test_python_docs_deterministic_and_sorted():
    from pydoc_data.topics import topics

    docs = list(iter_documents(CorpusSpec("python-docs")))
    assert len(docs) > 50
    assert docs == list(iter_documents(CorpusSpec("python-docs")))
    assert docs[0] == topics[sorted(topics)[0]]
    assert docs == [topics[k] for k in sorted(topics) if topics[k].strip()]


def test_python_stdlib_real_files():
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files()
    rel = [f.relative_to(root).as_posix() for f in files]
    assert rel == sorted(rel)
    assert "this.py" in rel and "json/decoder.py" in rel
    for r in rel:
        parts = set(r.split("/")[:-1])
        assert not parts & {"test", "tests", "idle_test", "site-packages", "__pycache__"}, r
    docs = list(iter_documents(CorpusSpec("python-stdlib")))
    this = (root / "this.py").read_text(encoding="utf-8", errors="replace")
    assert this in docs
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    assert docs == [t for t in texts if t.strip()]
    n_docs = len(list(iter_documents(CorpusSpec("python-docs"))))
    cpython = iter_documents(CorpusSpec())  # the default: docs then stdlib
    assert sum(1 for _ in cpython) == n_docs + len(docs)


def test_python_stdlib_skips_test_dirs(tmp_path, monkeypatch):
    files = {
        "b.py": "b", "a.py": "a", "pkg/c.py": "c", "pkg/empty.py": "  \n",
        "test/t.py": "T", "pkg/tests/u.py": "U", "idlelib/idle_test/v.py": "V",
        "site-packages/w.py": "W", "__pycache__/x.py": "X", "notes.txt": "N",
        "_sysconfigdata__linux.py": "S", "pkg/data.pyc": "P",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"stdlib": str(tmp_path)})
    assert list(iter_documents(CorpusSpec("python-stdlib"))) == ["a", "b", "c"]


# --- local files and HF -----------------------------------------------------------------------


def test_txt_one_doc_per_file_and_separator(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first para\n\nsecond para\n\n\n\nthird")
    assert list(iter_documents(CorpusSpec(str(p)))) == [p.read_text()]
    docs = list(iter_documents(CorpusSpec(str(p), doc_separator="\n\n")))
    assert docs == ["first para", "second para", "third"]  # the empty part is skipped


def test_jsonl_and_custom_field(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", ["one", "", "two"])
    assert list(iter_documents(CorpusSpec(str(p)))) == ["one", "two"]
    q = write_jsonl(tmp_path / "e.jsonl", ["alpha", "beta"], field="content")
    assert list(iter_documents(CorpusSpec(str(q), text_field="content"))) == ["alpha", "beta"]
    with pytest.raises(DataError, match="content"):
        list(iter_documents(CorpusSpec(str(p), text_field="content")))


def test_parquet(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["p1", None, "p2"], "n": [1, 2, 3]}), p)
    assert list(iter_documents(CorpusSpec(str(p), text_field="body"))) == ["p1", "p2"]
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_documents(CorpusSpec(str(p))))


def test_directory_sorted_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("from b")
    write_jsonl(tmp_path / "a.jsonl", ["a1", "a2"])
    pq.write_table(pa.table({"text": ["s1"]}), tmp_path / "sub" / "c.parquet")
    (tmp_path / "ignored.csv").write_text("nope")
    spec = CorpusSpec(str(tmp_path))
    assert list(iter_documents(spec)) == ["a1", "a2", "from b", "s1"]
    assert list(iter_documents(dataclasses.replace(spec, max_docs=3))) == ["a1", "a2", "from b"]


def test_hf_json_local_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    p = write_jsonl(tmp_path / "hf.jsonl", ["h1", "  ", "h2", "h3"], field="body")
    spec = CorpusSpec("hf:json", data_files=str(p), text_field="body")
    assert list(iter_documents(spec)) == ["h1", "h2", "h3"]
    with pytest.raises(DataError, match="no column 'text'"):
        list(iter_documents(dataclasses.replace(spec, text_field="text")))


def test_shuffle_deterministic(many_docs_jsonl):
    base = CorpusSpec(str(many_docs_jsonl))
    plain = list(iter_documents(base))
    s0 = list(iter_documents(dataclasses.replace(base, shuffle_docs=True, seed=0)))
    assert s0 == list(iter_documents(dataclasses.replace(base, shuffle_docs=True, seed=0)))
    s1 = list(iter_documents(dataclasses.replace(base, shuffle_docs=True, seed=1)))
    assert s0 != plain and s0 != s1
    assert sorted(s0) == sorted(plain) == sorted(s1)
    sub = list(iter_documents(dataclasses.replace(base, shuffle_docs=True, max_docs=5)))
    assert sub == s0[:5]


# --- errors and config ------------------------------------------------------------------------


def test_missing_path_and_empty_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="does not exist") as e:
        iter_documents(CorpusSpec(str(missing)))  # raised eagerly, before iteration
    assert str(missing) in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    with pytest.raises(DataError, match="no non-empty documents") as e:
        list(iter_documents(CorpusSpec(str(empty))))
    assert str(empty) in str(e.value)
    d = tmp_path / "nothing_here"
    d.mkdir()
    with pytest.raises(DataError, match="holds no") as e:
        iter_documents(CorpusSpec(str(d)))
    assert str(d) in str(e.value)


def test_bad_json_line_and_unknown_suffix(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        list(iter_documents(CorpusSpec(str(p))))
    q = tmp_path / "data.csv"
    q.write_text("a,b\n")
    with pytest.raises(DataError, match=r"\.jsonl"):
        iter_documents(CorpusSpec(str(q)))


def test_unknown_builtin_suggests():
    with pytest.raises(DataError, match="python-docs") as e:
        iter_documents(CorpusSpec("python-doc"))
    assert "Did you mean" in str(e.value)
    assert "cpython" in str(e.value)


def test_spec_dict_roundtrip_and_unknown_key():
    spec = CorpusSpec("python-docs", max_docs=3, shuffle_docs=True, seed=7)
    d = json.loads(json.dumps(dataclasses.asdict(spec)))
    assert CorpusSpec.from_dict(d) == spec
    assert CorpusSpec.from_dict({}) == CorpusSpec()
    with pytest.raises(ConfigError, match="max_doc") as e:
        CorpusSpec.from_dict({"max_doc": 3})
    assert "max_docs" in str(e.value) and "text_field" in str(e.value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1
    with pytest.raises(ConfigError):
        CorpusSpec(max_docs=0)


# --- packing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_docs", [1, 2, 64])
def test_pack_with_bos_matches_reference(tok, batch_docs):
    ctx = 8
    windows = list(pack_documents(DOCS, tok, ctx, batch_docs=batch_docs))
    stream = reference_stream(tok, DOCS)
    body = ctx - 1
    assert len(windows) == len(stream) // body
    for i, w in enumerate(windows):
        assert w.dtype == torch.int64 and w.shape == (ctx,)
        assert w[0].item() == tok.bos_token_id
        assert (w == tok.bos_token_id).sum().item() == 1
        assert w[1:].tolist() == stream[i * body:(i + 1) * body]
    text = tok.decode(torch.cat([w[1:] for w in windows]))
    assert "<eos>".join(DOCS).startswith(text) and len(text) > 0.8 * len("".join(DOCS))
    n_eos = sum((w == tok.eos_token_id).sum().item() for w in windows)
    assert n_eos == stream[: len(windows) * body].count(tok.eos_token_id) >= len(DOCS) - 2


def test_pack_without_bos_and_without_eos(tok):
    ctx = 6
    stream = reference_stream(tok, DOCS)
    windows = list(pack_documents(DOCS, tok, ctx, prepend_bos=False))
    assert len(windows) == len(stream) // ctx
    assert torch.cat(windows).tolist() == stream[: len(windows) * ctx]
    no_eos = torch.cat(list(pack_documents(DOCS, tok, ctx, eos_between_docs=False)))
    assert tok.eos_token_id not in no_eos.tolist()
    assert no_eos.view(-1, ctx)[:, 1:].flatten().tolist() == reference_stream(tok, DOCS, eos=False)[
        : no_eos.numel() // ctx * (ctx - 1)]


def test_pack_is_lazy(tok):
    consumed = 0

    def docs():
        nonlocal consumed
        for i in range(10_000):
            consumed += 1
            yield f"doc {i} with some text"

    windows = pack_documents(docs(), tok, 16, batch_docs=4)
    next(windows)
    assert consumed <= 4


class _FakeTok:
    def __init__(self, bos=None, eos=None):
        self.bos_token_id, self.eos_token_id = bos, eos

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[10 + ord(c) % 50 for c in t] for t in texts]}


def test_bos_fallback_and_missing():
    w = next(pack_documents(["abcdefgh"], _FakeTok(eos=3), 4))
    assert w[0].item() == 3
    with pytest.raises(DataError, match="prepend_bos=False"):
        next(pack_documents(["abcdefgh"], _FakeTok(), 4))
    w = next(pack_documents(["abcd", "efgh"], _FakeTok(), 4, prepend_bos=False))
    assert w.tolist() == [10 + ord(c) % 50 for c in "abcd"]  # no EOS token: plain concatenation
    with pytest.raises(ConfigError):
        next(pack_documents(["abc"], _FakeTok(bos=1), 1))


def test_token_windows_counts(tok, many_docs_jsonl):
    spec = CorpusSpec(str(many_docs_jsonl))
    full = token_windows(spec, tok, 16)
    stream = reference_stream(tok, list(iter_documents(spec)))
    assert full.shape == (len(stream) // 15, 16)
    assert (full[:, 0] == tok.bos_token_id).all()
    for n_tokens, expect in [(48, 3), (50, 4), (1, 1)]:
        w = token_windows(spec, tok, 16, n_tokens, progress=True)
        assert w.shape == (expect, 16) and torch.equal(w, full[:expect])
    assert torch.equal(token_windows(spec, tok, 16, 10**9), full)  # capped by the corpus
    tiny = many_docs_jsonl.with_name("tiny.txt")
    tiny.write_text("short")
    with pytest.raises(DataError, match="fewer than 16 tokens"):
        token_windows(CorpusSpec(str(tiny)), tok, 16)


def test_iter_token_batches_skip(tok, many_docs_jsonl):
    spec = CorpusSpec(str(many_docs_jsonl))
    batches = list(iter_token_batches(spec, tok, 16, 4))
    assert all(b.shape == (4, 16) for b in batches[:-1]) and 1 <= len(batches[-1]) <= 4
    all_windows = torch.cat(batches)
    assert torch.equal(all_windows, token_windows(spec, tok, 16))
    for k in (1, 4, 5, len(all_windows) - 1):
        skipped = torch.cat(list(iter_token_batches(spec, tok, 16, 4, skip_windows=k)))
        assert torch.equal(skipped, all_windows[k:])
    assert list(iter_token_batches(spec, tok, 16, 4, skip_windows=len(all_windows))) == []
    # n_tokens counts the skipped windows too: a resumed job asks for the same total
    capped = torch.cat(list(iter_token_batches(spec, tok, 16, 4, n_tokens=16 * 7, skip_windows=3)))
    assert torch.equal(capped, all_windows[3:7])


def test_corpus_fingerprint():
    spec = CorpusSpec("python-docs")
    fp = corpus_fingerprint(spec, "tok", 128, True)
    assert fp == corpus_fingerprint(CorpusSpec("python-docs"), "tok", 128, True)
    assert len(fp) == 16 and int(fp, 16) >= 0
    others = {
        corpus_fingerprint(spec, "tok2", 128, True),
        corpus_fingerprint(spec, "tok", 64, True),
        corpus_fingerprint(spec, "tok", 128, False),
        corpus_fingerprint(dataclasses.replace(spec, seed=1), "tok", 128, True),
    }
    assert fp not in others and len(others) == 4
