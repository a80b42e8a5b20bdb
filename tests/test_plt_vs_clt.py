"""PLT vs CLT at equal latents and tokens (circuits/plt_vs_clt.py) on a tiny 4-layer model."""

from __future__ import annotations

import json

import pytest
import torch

from interp.errors import ConfigError


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from interp.models.loading import load_model
    from interp.models.tiny import save_tiny_model

    return load_model(save_tiny_model(tmp_path_factory.mktemp("tiny4"), "llama", seed=0,
                                      n_layers=4))


def test_both_sets_train_on_the_same_rows_and_are_scored_alike(tiny4, tmp_path):
    from circuits.plt_vs_clt import ComparisonConfig, capture, compare_sets, train_pair
    from circuits.quality import QualityConfig

    cfg = ComparisonConfig(layers=(1, 2, 3), tokens=2048, width=48, k=4, batch_size=256)
    rows = capture(tiny4, cfg)
    assert set(rows) == set(cfg.hooks) and all(v.shape[0] == 2048 for v in rows.values())
    again = capture(tiny4, cfg)["blocks.1.hook_mlp_out"]
    assert torch.equal(rows["blocks.1.hook_mlp_out"], again)
    pair = train_pair(tiny4, cfg, tmp_path / "cmp")
    assert pair.plt.kind == "per-layer transcoder" and pair.clt.kind == "cross-layer transcoder"
    assert pair.plt.layers == pair.clt.layers == [1, 2, 3]
    # equal total latents, equal k, equal training tokens (read back from the runs)
    assert sum(pair.plt[i].cfg.d_sae for i in pair.plt.layers) == pair.clt.clt.cfg.d_sae == 144
    plt_run = json.loads((tmp_path / "cmp" / "plt" / "run.json").read_text())
    clt_run = json.loads((tmp_path / "cmp" / "clt" / "run.json").read_text())
    assert plt_run["config"]["tokens"] == 2048
    assert clt_run["config"]["total_tokens"] == 2048
    assert clt_run["config"]["sae"]["k"] == pair.plt[1].cfg.k == 4
    res = compare_sets(tiny4, {"PLT": pair.plt, "CLT": pair.clt}, ["def f(x): return x"],
                       QualityConfig(batch_size=64), tokens=pair.tokens)
    json.dumps(res)
    assert [r["set"] for r in res["table"]] == ["PLT", "CLT"]
    for r in res["table"]:
        assert r["latents"] == 144 and r["train_tokens"] == 2048
        assert 0 <= r["replacement_score"] <= 1 and 0 <= r["completeness_score"] <= 1
        assert set(r["nmse"]) == {"1", "2", "3"}
        assert all(0 < v < float("inf") for v in r["nmse"].values())
    assert res["reports"]["CLT"]["feature_type"] == "cross-layer transcoder"


def test_comparison_config_refuses_what_a_clt_cannot_be():
    from circuits.plt_vs_clt import ComparisonConfig

    with pytest.raises(ConfigError, match="contiguous"):
        ComparisonConfig(layers=(0, 2))
    with pytest.raises(ConfigError, match="at least one batch"):
        ComparisonConfig(tokens=10, batch_size=1024)
