"""The explorer's linearisation page on a real tiny run (tiny Llama), with streamlit AppTest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
if (_repo := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _repo)  # `app` is a folder of the checkout, not an installed package
import streamlit as st  # noqa: E402
from app_workspace import charts, page  # noqa: E402

PAGE = "pages/10_Linearisation.py"


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def test_linearise_page_shows_the_run(tmp_path, monkeypatch, tiny_llama):
    from interp.linearise.analysis import LineariseConfig
    from interp.linearise.runs import linearise_run

    ws = tmp_path / "ws"
    run = linearise_run(LineariseConfig(prompt="Hello, world", k=6, dtype="float64"),
                        name="tiny", workspace=ws, model=tiny_llama, progress=False)
    at = page(ws, monkeypatch, PAGE, run="tiny")
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert any(t.startswith("Singular vectors decoded") for t in titles)
    assert any(t.startswith("Singular values") for t in titles)
    assert any(t.startswith("Stable rank of the cumulative Jacobian") for t in titles)
    conv = next(f for f in charts(at)
                if f["layout"]["title"]["text"].startswith("Convergence of the top singular"))
    assert {tr["name"].split()[0] for tr in conv["data"]} == {"left", "right"}
    text = " ".join(m.value for m in at.markdown)
    assert f"{run.metrics['rel_error']:.1e}" in text
