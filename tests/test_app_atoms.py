"""The explorer's atoms page on a real tiny atoms run (tiny Llama), with streamlit AppTest."""

from __future__ import annotations

from app.kinds import KINDS
from app_workspace import charts

PAGE = KINDS["atoms"].url_path


def test_atoms_page_shows_the_table_angles_and_coherence(tmp_path, explorer, tiny_llama):
    from saes.atoms.compare import AtomsConfig
    from saes.atoms.runs import atoms_run

    ws = tmp_path / "ws"
    cfg = AtomsConfig(hooks=("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"),
                      n_tokens=1024, context_size=64, corpus="python-docs", width_mult=2,
                      feature_k=4, train_tokens=128 * 6, batch_size=128, n_angle_pairs=500,
                      n_recovery=2, max_eval=64)
    run = atoms_run(cfg, "tiny", workspace=ws, model=tiny_llama, progress=False)
    assert run.status == "done" and set(run.metrics["ordering_holds"]) == set(cfg.hooks)
    at = explorer(ws, PAGE, run="tiny")
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert "Neurons vs features vs atoms" in titles
    assert any("Euclidean vs AIP angles" in t for t in titles)
    assert "Per-unit coherence" in titles
