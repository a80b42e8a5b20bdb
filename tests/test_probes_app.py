"""The explorer's probe, lens and geometry pages on real tiny runs (streamlit AppTest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
if (_repo := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _repo)  # `app` is a folder of the checkout, not an installed package
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

HOME = str(Path(__file__).resolve().parent.parent / "app" / "Home.py")


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


@pytest.mark.parametrize("page, n_charts", [("pages/4_Probes.py", 1), ("pages/5_Lenses.py", 3),
                                            ("pages/6_Layer_geometry.py", 3)])
def test_probe_lens_geometry_pages_show_their_figures(ws, monkeypatch, page, n_charts):
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    at = AppTest.from_file(HOME, default_timeout=120)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) >= n_charts
    titles = " ".join(str(s.get("layout", {}).get("title", {}).get("text", "")) for s in specs)
    expected = {"pages/4_Probes.py": "Linear probe: word_class",
                "pages/5_Lenses.py": "KL to the model's output distribution",
                "pages/6_Layer_geometry.py": "Layer linearity"}[page]
    assert expected in titles
