"""The explorer's locality-dial page on real tiny runs (a lambda sweep and an inference-only
schedule comparison on the tiny Llama), with streamlit AppTest."""

from __future__ import annotations

import pytest

from app.kinds import KINDS
from app_workspace import charts

PAGE = KINDS["localist"].url_path


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_llama_dir, tiny_llama):
    from interp.localist.finetune import ScheduleConfig
    from interp.localist.runs import run_schedules, run_sweep
    from interp.localist.train import LocalistConfig

    root = tmp_path_factory.mktemp("localist-app") / "ws"
    run_sweep([0.0, 1.0], LocalistConfig(steps=4, d_model=16, n_heads=2, context_size=32,
                                         batch_size=4, n_tokens=20_000, eval_windows=4),
              name="tiny-sweep", workspace=root)
    run_schedules(ScheduleConfig(model=str(tiny_llama_dir), betas=(2.0,), steps=0,
                                 train_layers=0, context_size=32, eval_windows=2),
                  model=tiny_llama, name="tiny-schedules", workspace=root)
    return root


def test_sweep_page_shows_the_tradeoff(ws, explorer):
    at = explorer(ws, PAGE, run="tiny-sweep")
    figs = charts(at)
    titles = [f["layout"]["title"]["text"] for f in figs]
    assert titles[0].startswith("Locality dial")
    assert any(t.startswith("Training curves") for t in titles)
    assert any(t.startswith("trained, lambda=1") for t in titles)  # the attention heatmap
    xs = {tuple(tr["x"]) for tr in figs[0]["data"] if "x" in tr and isinstance(tr["x"], list)}
    assert (0.0, 1.0) in xs


def test_schedules_page_shows_each_schedule(ws, explorer):
    at = explorer(ws, PAGE, run="tiny-schedules")
    figs = charts(at)
    assert figs[0]["layout"]["title"]["text"].startswith("Progressive locality schedules")
    bars = figs[0]["data"][0]["x"]
    assert list(bars) == ["uniform-distributed", "uniform-localist", "progressive-beta2"]
    assert figs[1]["layout"]["title"]["text"] == "Per-layer dials"
