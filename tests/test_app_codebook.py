"""The explorer's codebook page on a real tiny TokFSM run, with streamlit AppTest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
if (_repo := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _repo)  # `app` is a folder of the checkout, not an installed package
import streamlit as st  # noqa: E402
from app_workspace import charts, page  # noqa: E402

PAGE = "pages/12_Codebooks.py"


@pytest.fixture(autouse=True)
def _fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def test_codebook_page_shows_fsm_purity_patching_and_steering(tmp_path, monkeypatch):
    from saes.codebook.fsm_model import FSMConfig
    from saes.codebook.runs import fsm_run

    ws = tmp_path / "ws"
    cfg = FSMConfig(n_states=9, n_edges=2, base=3, n_layers=1, d_model=32, n_heads=2, d_mlp=64,
                    seq_len=16, n_codes=16, pretrain_steps=5, steps=5, batch_size=8,
                    warmup_steps=1)
    fsm_run(cfg, ws, "tiny", progress=False, n_samples=8)
    at = page(ws, monkeypatch, PAGE, run="tiny")
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    for want in ("Training with codebooks", "Code purity", "Codes x states",
                 "Patching state codes", "Steering by codes"):
        assert any(t.startswith(want) for t in titles), (want, titles)
