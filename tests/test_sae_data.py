"""The training data seam (saes.data): every source replays batch i from index i; widths come
from the hook table; run configs from before the seam still load; another architecture's
setting is refused."""

from __future__ import annotations

import itertools

import pytest
import torch

from interp.caching import cache_activations
from interp.data import CorpusSpec
from interp.errors import ConfigError
from interp.store import StoreConfig
from saes.base import SAEConfig
from saes.data import DataConfig, ModelSource, StoreSource, TensorSource, as_source
from saes.train import TrainConfig, split_config

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out")


@pytest.fixture(scope="module")
def store_dir(tiny_llama, tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("data-store")
    cfg = StoreConfig(model=str(tiny_llama_dir), hooks=HOOKS, n_tokens=64 * 64, context_size=64,
                      batch_size=8, shard_windows=16, corpus=CorpusSpec(source="python-docs"))
    cache_activations(out, cfg, model=tiny_llama, progress=False)
    return out


def _take(it, n):
    return list(itertools.islice(it, n))


def _assert_replays(source, hooks, batch_size=64, n=6, start=3):
    """Batches from `start` equal batches start.. of a reader started at 0."""
    whole = _take(source.batches(hooks, batch_size, 0, n_batches=n + start), n + start)
    again = _take(source.batches(hooks, batch_size, start, n_batches=n + start), n)
    for a, b in zip(whole[start:], again):
        assert a.keys() == b.keys() == set(hooks)
        for h in hooks:
            assert torch.equal(a[h], b[h])
    assert not torch.equal(whole[0][hooks[0]], whole[1][hooks[0]])


def test_a_store_source_replays_from_any_batch(store_dir):
    _assert_replays(StoreSource(store_dir, seed=1), list(HOOKS))


def test_a_model_source_replays_from_any_batch(tiny_llama):
    _assert_replays(ModelSource(tiny_llama, seed=2), list(HOOKS), n=3, start=2)


@pytest.mark.parametrize("shuffle", [None, 5])
def test_a_tensor_source_replays_across_epochs(shuffle):
    x = torch.randn(64 * 4 + 10, 8, generator=torch.Generator().manual_seed(0))
    src = TensorSource({"a": x, "b": 2 * x}, shuffle=shuffle)
    _assert_replays(src, ["a", "b"], n=9, start=5)  # 4 batches an epoch: crosses two epochs
    first = next(src.batches(["a", "b"], 64))
    assert torch.equal(first["b"], 2 * first["a"])  # hooks stay row-aligned
    if shuffle is None:
        assert torch.equal(first["a"], x[:64])


def test_widths_come_from_the_hook_table_without_a_forward_pass(tiny_llama):
    names = ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.mlp.hook_post",
             "blocks.0.attn.hook_z", "blocks.1.attn.hook_k", "blocks.0.mlp.hook_pre"]
    calls = []
    handle = tiny_llama.hf_model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        widths = {h: ModelSource(tiny_llama).width(h) for h in names}
    finally:
        handle.remove()
    assert calls == []
    _, cache = tiny_llama.run_with_cache("a b c", hooks=names)
    assert widths == {h: int(cache[h][0, 0].numel()) for h in names}
    with pytest.raises(Exception, match="no fixed width"):
        ModelSource(tiny_llama).width("blocks.0.attn.hook_pattern")


def test_store_source_names_the_hooks_it_has(store_dir):
    with pytest.raises(Exception, match="blocks.0.hook_resid_post"):
        next(StoreSource(store_dir).batches(["blocks.0.hook_resid_pots"], 64))
    assert StoreSource(store_dir).width(HOOKS[1]) == 64


def test_as_source_takes_configs_sources_and_tensors(store_dir):
    assert isinstance(as_source(DataConfig(activations=str(store_dir))), StoreSource)
    assert isinstance(as_source(torch.zeros(4, 2)), TensorSource)
    src = TensorSource(torch.zeros(4, 2))
    assert as_source(src) is src
    with pytest.raises(ConfigError, match="DataConfig"):
        as_source("a/store")


def test_configs_written_before_the_seam_split_into_train_and_data():
    legacy = {**TrainConfig(seed=3).to_dict(), "activations": "runs/activations/s",
              "model": "m", "holdout_every": 20, "shuffle_buffer_rows": 1024}
    train, data = split_config(legacy)
    assert train == TrainConfig(seed=3)
    assert data == DataConfig(activations="runs/activations/s", model="m", seed=3,
                              holdout_every=20, shuffle_buffer_rows=1024)
    new = {**TrainConfig().to_dict(), "data": DataConfig(activations="x").to_dict()}
    assert split_config(new) == (TrainConfig(), DataConfig(activations="x"))
    with pytest.raises(ConfigError, match="Did you mean: lr"):
        split_config({**TrainConfig().to_dict(), "lrr": 1e-3})


def test_another_architectures_setting_is_refused():
    from saes.architectures import check_options, create_sae

    with pytest.raises(ConfigError, match="k=16 is a setting of .*topk.*standard"):
        create_sae(SAEConfig(architecture="standard", d_in=8, d_sae=16, k=16))
    with pytest.raises(ConfigError, match="l1_coefficient"):
        check_options(SAEConfig(architecture="topk", d_in=8, d_sae=16, l1_coefficient=1.0))
    check_options(SAEConfig(architecture="jumprelu", d_in=8, d_sae=16, l0_coefficient=2.0))


def test_the_cli_refuses_a_flag_of_another_architecture(store_dir, tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    res = CliRunner().invoke(app, ["train-sae", "--activations", str(store_dir), "--hook",
                                   HOOKS[0], "--arch", "standard", "--k", "8", "--tokens", "512",
                                   "--batch-size", "256", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "k=8 is a setting of" in res.output
    assert not (tmp_path / "r" / "run.json").exists()
