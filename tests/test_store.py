"""The activation store on a tiny real model: capture, filters, tracing, dtypes, batches."""

from __future__ import annotations

import json

import pytest
import torch

from interp.data import CorpusSpec
from interp.errors import HookNotFound, InterpError, StoreMismatch
from interp.caching import cache_activations, stream_activations
from interp.store import ActivationStore, StoreConfig

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.0.attn.hook_z")


def config(path, **kw):
    base = dict(model=str(path), hooks=HOOKS, n_tokens=64 * 40, context_size=64, batch_size=4,
                shard_windows=8, corpus=CorpusSpec(source="python-docs"))
    base.update(kw)
    return StoreConfig(**base)


@pytest.fixture(scope="module")
def store(tiny_llama, tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    return cache_activations(out, config(tiny_llama_dir), model=tiny_llama, progress=False)


def test_manifest_describes_the_store(store, tiny_llama):
    m = store.manifest
    assert m["complete"] and m["n_windows"] == 40 and m["n_tokens_seen"] == 40 * 64
    assert store.n_shards == 5 and [s["windows"] for s in m["shards"]] == [8] * 5
    assert m["hooks"] == {"blocks.0.hook_resid_post": {"d": 64}, "blocks.1.hook_mlp_out": {"d": 64},
                          "blocks.0.attn.hook_z": {"d": 64}}
    assert m["model_facts"]["n_layers"] == 2 and m["dtype"] == "float32"
    assert m["corpus"]["source"] == "python-docs" and len(m["corpus_fingerprint"]) == 16
    assert set(m["filters"]["outlier_norm_threshold"]) == set(HOOKS)
    assert len(store) == sum(s["rows"] for s in m["shards"]) <= 40 * 63  # BOS dropped


def test_every_row_traces_back_to_its_token_and_matches_the_model(store, tiny_llama):
    for shard, row in [(0, 0), (2, 17), (4, len(store.shard(4)["positions"]) - 1)]:
        window, pos, tokens = store.trace(shard, row)
        assert pos >= 1  # position 0 (BOS) is never stored
        assert tokens[0] == tiny_llama.tokenizer.bos_token_id
        _, cache = tiny_llama.run_with_cache(tokens[None].long(), hooks=list(HOOKS))
        s = store.shard(shard)
        for h in HOOKS:
            torch.testing.assert_close(s[h][row], cache[h][0, pos].reshape(-1), atol=1e-5, rtol=1e-5)
    assert store.tokens().shape == (40, 64)


def test_outlier_filter_drops_high_norm_rows(tiny_llama, tiny_llama_dir, tmp_path):
    cfg = config(tiny_llama_dir, hooks=("blocks.0.hook_resid_post",), outlier_ratio=1.0, n_tokens=64 * 8)
    st = cache_activations(tmp_path / "a", cfg, model=tiny_llama, progress=False)
    thr = st.manifest["filters"]["outlier_norm_threshold"]["blocks.0.hook_resid_post"]
    x = st.activations()
    assert x.norm(dim=-1).max() <= thr + 1e-4
    unfiltered = cache_activations(tmp_path / "b", config(
        tiny_llama_dir, hooks=("blocks.0.hook_resid_post",), outlier_ratio=None, drop_bos=False,
        n_tokens=64 * 8), model=tiny_llama, progress=False)
    assert len(unfiltered) == 8 * 64 and len(st) < 0.7 * len(unfiltered)


@pytest.mark.parametrize("dtype,torch_dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_low_precision_stores(dtype, torch_dtype, store, tiny_llama, tiny_llama_dir, tmp_path):
    st = cache_activations(tmp_path, config(tiny_llama_dir, dtype=dtype), model=tiny_llama,
                           progress=False)
    raw = st.shard(0)["blocks.0.hook_resid_post"]
    assert raw.dtype == torch_dtype
    ref = store.shard(0)["blocks.0.hook_resid_post"]
    torch.testing.assert_close(raw.float(), ref, atol=2e-2, rtol=2e-2)
    assert st.path.joinpath("shard-00000.safetensors").stat().st_size < 0.6 * store.path.joinpath(
        "shard-00000.safetensors").stat().st_size


def test_batches_cover_the_split_once_per_epoch_deterministically(store):
    h = "blocks.0.hook_resid_post"
    train, evals = store.activations(h, split="train"), store.activations(h, split="eval")
    assert len(train) + len(evals) == len(store) and len(evals) > 0
    a = torch.cat(list(store.batches(h, 50, seed=1, buffer_rows=300)))
    b = torch.cat(list(store.batches(h, 50, seed=1, buffer_rows=300)))
    c = torch.cat(list(store.batches(h, 50, seed=2, buffer_rows=300)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a) == (len(train) // 50) * 50
    # shuffled: the batch order is not the storage order, but rows are the training rows
    assert not torch.equal(a, train[: len(a)])
    key = lambda x: sorted(map(tuple, x.round(decimals=5).tolist()))  # noqa: E731
    assert set(key(a)) <= set(key(train)) and not set(key(a)) & set(key(evals))


@pytest.mark.parametrize("buffer_rows", [300, 10_000])
def test_reader_resumes_at_any_batch(store, buffer_rows):
    h = "blocks.0.hook_resid_post"
    full = list(store.batches(h, 64, seed=3, buffer_rows=buffer_rows, epochs=2))
    for start in (1, 7, len(full) // 2 + 1):
        tail = list(store.batches(h, 64, seed=3, buffer_rows=buffer_rows, epochs=2, start_batch=start))
        assert len(tail) == len(full) - start
        assert all(torch.equal(x, y) for x, y in zip(full[start:], tail))


def test_multi_hook_batches_keep_rows_aligned(store):
    a = next(store.batches(list(HOOKS), 32, seed=0, shuffle=False, split="all"))
    assert set(a) == set(HOOKS) and all(v.shape == (32, 64) for v in a.values())
    s = store.shard(0)
    for h in HOOKS:
        torch.testing.assert_close(a[h], s[h][:32])


def test_stream_gives_the_store_rows_without_disk(store, tiny_llama, tiny_llama_dir):
    cfg = config(tiny_llama_dir)
    rows = list(stream_activations(tiny_llama, cfg, batch_size=100, seed=0, buffer_rows=500))
    got = torch.cat([r["blocks.1.hook_mlp_out"] for r in rows])
    assert len(got) == (len(store) // 100) * 100 or len(got) >= len(store) - 100
    want = store.activations("blocks.1.hook_mlp_out")
    key = lambda x: sorted(map(tuple, x.round(decimals=4).tolist()))  # noqa: E731
    assert set(key(got)) <= set(key(want))


def test_a_different_config_on_an_existing_store_is_refused(store, tiny_llama, tiny_llama_dir):
    with pytest.raises(StoreMismatch, match="n_tokens"):
        cache_activations(store.path, config(tiny_llama_dir, n_tokens=64 * 41), model=tiny_llama,
                          progress=False)
    # the same config returns the finished store without recomputing
    before = (store.path / "manifest.json").read_bytes()
    again = cache_activations(store.path, config(tiny_llama_dir), model=tiny_llama, progress=False)
    assert len(again) == len(store) and (store.path / "manifest.json").read_bytes() == before


def test_reader_errors(store, tmp_path):
    with pytest.raises(HookNotFound, match="blocks.0.hook_resid_post"):
        store.activations("blocks.0.hook_resid_pos")
    with pytest.raises(InterpError, match="several hooks"):
        store.activations()
    with pytest.raises(InterpError, match="not an activation store"):
        ActivationStore(tmp_path)
    with pytest.raises(InterpError, match="fewer than one batch"):
        next(store.batches("blocks.0.hook_resid_post", 10**6))


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = StoreConfig(hooks=("blocks.1.hook_resid_post",), corpus=CorpusSpec(source="python-docs"))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert StoreConfig.from_dict(d) == cfg
    with pytest.raises(InterpError, match="hookz"):
        StoreConfig.from_dict({**d, "hookz": []})
    with pytest.raises(InterpError, match="multiple"):
        StoreConfig(batch_size=16, shard_windows=24)
