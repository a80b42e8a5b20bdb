"""The explorer's codebook page on a real tiny TokFSM run, with streamlit AppTest."""

from __future__ import annotations

from app.kinds import KINDS
from app_workspace import charts

PAGE = KINDS["codebook"].url_path


def test_codebook_page_shows_fsm_purity_patching_and_steering(tmp_path, explorer):
    from saes.codebook.fsm_model import FSMConfig
    from saes.codebook.runs import fsm_run

    ws = tmp_path / "ws"
    cfg = FSMConfig(n_states=9, n_edges=2, base=3, n_layers=1, d_model=32, n_heads=2, d_mlp=64,
                    seq_len=16, n_codes=16, pretrain_steps=5, steps=5, batch_size=8,
                    warmup_steps=1)
    fsm_run(cfg, ws, "tiny", progress=False, n_samples=8)
    at = explorer(ws, PAGE, run="tiny")
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    for want in ("Training with codebooks", "Code purity", "Codes x states",
                 "Patching state codes", "Steering by codes"):
        assert any(t.startswith(want) for t in titles), (want, titles)
