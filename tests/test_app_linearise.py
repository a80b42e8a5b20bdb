"""The explorer's linearisation page on a real tiny run (tiny Llama), with streamlit AppTest."""

from __future__ import annotations

from app.kinds import KINDS
from app_workspace import charts

PAGE = KINDS["linearise"].url_path


def test_linearise_page_shows_the_run(tmp_path, explorer, tiny_llama):
    from interp.linearise.analysis import LineariseConfig
    from interp.linearise.runs import linearise_run

    ws = tmp_path / "ws"
    run = linearise_run(LineariseConfig(prompt="Hello, world", k=6, dtype="float64"),
                        name="tiny", workspace=ws, model=tiny_llama, progress=False)
    at = explorer(ws, PAGE, run="tiny")
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    assert any(t.startswith("Singular vectors decoded") for t in titles)
    assert any(t.startswith("Singular values") for t in titles)
    assert any(t.startswith("Stable rank of the cumulative Jacobian") for t in titles)
    conv = next(f for f in charts(at)
                if f["layout"]["title"]["text"].startswith("Convergence of the top singular"))
    assert {tr["name"].split()[0] for tr in conv["data"]} == {"left", "right"}
    text = " ".join(m.value for m in at.markdown)
    assert f"{run.metrics['rel_error']:.1e}" in text
