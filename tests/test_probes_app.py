"""The explorer's probe, lens and geometry pages on real tiny runs (streamlit AppTest)."""

from __future__ import annotations

import json

import pytest

from app.kinds import KINDS
from app_workspace import charts


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_llama_dir, tiny_llama):
    from probes.runs import (GeometryConfig, LensConfig, ProbeConfig, geometry_run, lens_run,
                             probe_run)

    root = tmp_path_factory.mktemp("probes-app") / "ws"
    corpus = root.parent / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"The {i} cats sat on the mat and a dog ran "
                                                  f"to {i + 1} of them."}) + "\n"
                              for i in range(30)))
    common = dict(model=str(tiny_llama_dir), corpus=str(corpus), max_tokens=1200, context_size=40)
    probe_run(ProbeConfig(**common, task="word_class", layers="embed,0,1", l2_grid=(0.01, 1.0)),
              root, "wc", model=tiny_llama, progress=False)
    lens_run(LensConfig(**common, eval_tokens=100), root, "lens", model=tiny_llama,
             progress=False)
    geometry_run(GeometryConfig(**common, max_points_twonn=500), root, "geo", model=tiny_llama,
                 progress=False)
    return root


@pytest.mark.parametrize("kind, n_charts, title", [
    ("probe", 1, "Linear probe: word_class"),
    ("lens", 3, "KL to the model's output distribution"),
    ("geometry", 3, "Layer linearity")])
def test_probe_lens_geometry_pages_show_their_figures(ws, explorer, kind, n_charts, title):
    at = explorer(ws, KINDS[kind].url_path)
    specs = charts(at)
    assert len(specs) >= n_charts
    titles = " ".join(str(s.get("layout", {}).get("title", {}).get("text", "")) for s in specs)
    assert title in titles
