"""The evaluation suite on the explorer's SAE page ("Suite" tab, `app/views/sae_evals.py`)
under AppTest, on a run whose report the synthetic suite wrote: its figures with intervals,
the warnings, no traceback; a run without a report gets the command that makes one; a report
whose table is not Parquet gets a message, not a traceback. Also the figures themselves."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("streamlit")

from app_workspace import charts  # noqa: E402
from saes.architectures import create_sae  # noqa: E402
from saes.base import SAEConfig  # noqa: E402


@pytest.fixture(scope="module")
def run_with_report(tmp_path_factory):
    from interp.workspace import create_run
    from saes.evals import run_suite

    ws = tmp_path_factory.mktemp("ws")
    run = create_run("sae", "syn", {}, root=ws)
    sae = create_sae(SAEConfig(architecture="topk", d_in=64, d_sae=512, k=6), seed=0)
    rep = run_suite(sae, suites=("synthetic",), out=run.path / "evals", progress=False,
                    synthetic_tokens=60_000, synthetic_rows=2048, n_bootstrap=100)
    # a hand-made warning (as SCR's), to check warnings are shown
    rep_path = run.path / "evals" / "report.json"
    report = json.loads(rep_path.read_text())
    report["warnings"] = ["unreliable (arXiv 2605.18229): do not rank SAEs by it"]
    rep_path.write_text(json.dumps(report))
    run.finish(artefacts={"evals": "evals/report.json"})
    return ws, run, rep


def test_sae_page_draws_the_suite_with_intervals_and_warnings(run_with_report, explorer):
    ws, run, rep = run_with_report
    at = explorer(ws, "SAEs", run=run.name)
    specs = [s for s in charts(at) if "Recovery" in json.dumps(s.get("layout", {}))
             or any(t.get("type") == "bar" for t in s["data"])]
    assert len(specs) == 2  # the suite's panels and the recovery histogram
    panel = next(s for s in specs if any(t.get("type") == "bar" for t in s["data"]))
    bars = [t for t in panel["data"] if t["type"] == "bar"]
    assert {t["name"] for t in bars} >= {"sae", "random", "pca", "true"}
    sae_fvu = next(r for r in rep["rows"] if r["metric"] == "fvu" and r["subject"] == "sae")
    assert any(t.get("error_y") for t in bars)
    assert any("2605.18229" in w.value for w in at.warning)
    assert any("intervals" in c.value for c in at.caption)
    assert sae_fvu["ci_low"] <= sae_fvu["value"] <= sae_fvu["ci_high"]
    assert not at.error


def test_sae_page_without_a_report_says_how_to_make_one(tmp_path, explorer):
    from interp.workspace import create_run

    run = create_run("sae", "plain", {}, root=tmp_path)
    run.finish()
    at = explorer(tmp_path, "SAEs", run="plain")
    assert any("eval-sae" in i.value and "--suite" in i.value for i in at.info)


def test_a_table_that_is_not_parquet_is_a_message(run_with_report, explorer, tmp_path):
    import shutil

    ws, run, _ = run_with_report
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    (copy / "runs/sae/syn/evals/synthetic_features.parquet").write_bytes(b"not parquet")
    at = explorer(copy, "SAEs", run="syn")
    assert any("not a Parquet file" in e.value for e in at.error)


def test_suite_report_and_tables_through_the_data_layer(run_with_report, monkeypatch):
    from app.data import ExplorerError, get_run, suite_report, suite_table

    ws, run, rep = run_with_report
    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    r = get_run("sae", "syn")
    report = suite_report(r)
    assert report["rows"] == rep["rows"]
    t = suite_table(r, report, "synthetic_features")
    assert len(t["matched_cos"]) == len(t["subject"]) > 0
    assert suite_table(r, {**report, "files": {"x": "../escape.parquet"}}, "x") is None
    bad = {**r.artefacts, "evals": "evals/synthetic_features.parquet"}
    with pytest.raises(ExplorerError):
        suite_report(dataclasses.replace(r, artefacts=bad))


def test_figures_from_report_and_tables(run_with_report):
    from saes.evals import read_report, read_table
    from saes.evals.plots import (fig_compare, fig_probing_curve, fig_recovery, fig_suite,
                                  suite_figures)

    _, run, _ = run_with_report
    rep = read_report(run.path)
    fig = fig_suite(rep, "synthetic")
    assert len(fig.data) == len([r for r in rep["rows"] if r["value"] is not None])
    t = read_table(run.path, "synthetic_features")
    rec = fig_recovery(t, rep["suites"]["synthetic"]["random_expected_max_cos"])
    assert {tr.name for tr in rec.data} == {"sae", "random", "pca", "true"}
    assert set(suite_figures(rep, "synthetic", lambda name: None)) == {"synthetic"}
    assert set(rep["figures"]) == {"synthetic", "synthetic_recovery"}
    cmp = fig_compare({"a": rep, "b": rep}, [("synthetic", "recovery"), ("synthetic", "fvu")])
    assert [list(tr.x) for tr in cmp.data] == [["a", "b"], ["a", "b"]]
    assert fig_probing_curve(rep).data == ()  # no probing in this report: an empty figure
    assert "no figures" in fig_suite(rep, "probing").layout.title.text
