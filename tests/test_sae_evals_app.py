"""The evaluation view (`app/views/sae_evals.py`) under AppTest, on a run whose report the
synthetic suite wrote: tabs per suite, figures with intervals, warnings, no traceback; a run
without a report gets the command that makes one. Also the figures themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
if (_repo := str(Path(__file__).resolve().parent.parent)) not in sys.path:
    sys.path.insert(0, _repo)

from saes.base import SAEConfig, create_sae  # noqa: E402


@pytest.fixture(scope="module")
def run_with_report(tmp_path_factory):
    from interp.workspace import create_run
    from saes.evals import run_suite

    ws = tmp_path_factory.mktemp("ws")
    run = create_run("sae", "syn", {}, root=ws)
    sae = create_sae(SAEConfig(architecture="topk", d_in=64, d_sae=512, k=6), seed=0)
    rep = run_suite(sae, suites=("synthetic",), out=run.path / "evals", progress=False,
                    synthetic_tokens=60_000, synthetic_rows=2048, n_bootstrap=100)
    # a hand-made SCR row, to check the warning is shown
    rep_path = run.path / "evals" / "report.json"
    report = json.loads(rep_path.read_text())
    report["warnings"] = ["unreliable (arXiv 2605.18229): do not rank SAEs by it"]
    rep_path.write_text(json.dumps(report))
    run.finish(artefacts={"evals": "evals/report.json"})
    return ws, run, rep


def _render(ws, monkeypatch, run):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))

    def app(kind: str, name: str):
        from app.ui import get_run
        from app.views.sae_evals import render

        render(get_run(kind, name))

    at = AppTest.from_function(app, args=(run.kind, run.name), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_view_draws_every_suite_with_intervals_and_warnings(run_with_report, monkeypatch):
    ws, run, rep = run_with_report
    at = _render(ws, monkeypatch, run)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) == 2  # the suite's panels and the recovery histogram
    bars = [t for t in specs[0]["data"] if t["type"] == "bar"]
    assert {t["name"] for t in bars} >= {"sae", "random", "pca", "true"}
    assert any(t.get("error_y") for t in bars)
    assert any("2605.18229" in w.value for w in at.warning)
    assert any("intervals" in c.value for c in at.caption)


def test_view_without_a_report_says_how_to_make_one(tmp_path, monkeypatch):
    from interp.workspace import create_run

    run = create_run("sae", "plain", {}, root=tmp_path)
    run.finish()
    at = _render(tmp_path, monkeypatch, run)
    assert any("eval-sae" in i.value and "--suite" in i.value for i in at.info)


def test_figures_from_report_and_tables(run_with_report):
    from saes.evals import read_report, read_table
    from saes.evals.plots import fig_compare, fig_probing_curve, fig_recovery, fig_suite

    _, run, _ = run_with_report
    rep = read_report(run.path)
    fig = fig_suite(rep, "synthetic")
    assert len(fig.data) == len([r for r in rep["rows"] if r["value"] is not None])
    t = read_table(run.path, "synthetic_features")
    rec = fig_recovery(t, rep["suites"]["synthetic"]["random_expected_max_cos"])
    assert {tr.name for tr in rec.data} == {"sae", "random", "pca", "true"}
    cmp = fig_compare({"a": rep, "b": rep}, [("synthetic", "recovery"), ("synthetic", "fvu")])
    assert [list(tr.x) for tr in cmp.data] == [["a", "b"], ["a", "b"]]
    assert fig_probing_curve(rep).data == ()  # no probing in this report: an empty figure
    assert "no figures" in fig_suite(rep, "probing").layout.title.text
