"""The explorer's data layer (`app/data.py`) without Streamlit, on hostile workspaces: every way
a run folder can be wrong (tests/hostile_workspace.py) gives a broken run or a listed problem
with a message that says what is wrong, never an exception or a read outside the workspace;
random bytes and random JSON as run.json never raise."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import data
from app.data import ExplorerError
from hostile_workspace import ARTEFACT_CASES, CAN_FIFO, CASES, RUN_CASES, write_hostile_runs
from interp.workspace import STATUSES, Run, create_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("INTERP_WORKSPACE", str(ws))
    return ws


def _run(ws: Path, name: str = "ok", **over) -> Run:
    run = create_run("sae", name, {"lr": 1e-3}, root=ws)
    for k, v in over.items():
        setattr(run, k, v)
    run.save()
    return data.read_run(run.path, ws)


def test_the_data_layer_does_not_import_streamlit():
    code = ("import sys, app.data, app.kinds; "
            "assert 'streamlit' not in sys.modules, 'app.data imports streamlit'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_a_good_run_reads_back(ws):
    run = _run(ws, metrics={"fvu": 0.1, "hist": [1, 2]}, status="done")
    assert (run.kind, run.name, run.status, run.error) == ("sae", "ok", "done", None)
    assert run.config == {"lr": 1e-3} and data.problems(run, ws) == []
    assert data.scalar_metrics(run) == {"fvu": 0.1}  # lists are not scalars
    assert [r.name for r in data.scan_runs(ws)] == ["ok"] == [r.name for r in
                                                               data.scan_runs(ws, "sae")]
    assert data.get_run("sae", "ok", ws).config == run.config


def test_every_hostile_run_is_broken_or_has_its_problem(ws):
    write_hostile_runs(ws, "sae", ("fvu", "l0"))
    runs = {r.name: r for r in data.scan_runs(ws)}
    assert set(runs) == set(CASES)  # every case listed, nothing raised
    for case, phrase in RUN_CASES.items():
        run = runs[case]
        if case == "nan-metrics":
            assert run.status == "done"
            assert data.nonfinite(run.metrics) == ["fvu", "l0"]
            assert phrase in " ".join(data.problems(run, ws))
        else:
            assert run.status == "broken" and phrase in run.error, (case, run.error)
            assert data.problems(run, ws) == [run.error]
    for case, phrase in ARTEFACT_CASES.items():
        run = runs[case]
        assert run.status == "done", (case, run.error)
        found = " ".join(data.problems(run, ws, deep=True))
        assert (phrase in found) if phrase else found == "", (case, found)
        for key in run.artefacts:
            if phrase is None:  # odd but readable JSON: NaN and inf come back as floats
                assert data.read_json(data.artefact(run, key, ws=ws), ws) is not None
            elif case not in ("garbage-artefacts", "giant-artefacts", "not-parquet"):
                with pytest.raises(ExplorerError, match=phrase):
                    data.artefact(run, key, ws=ws)
                assert data.artefact(run, key, required=False, ws=ws) is None


def test_scan_skips_hidden_folders_and_refuses_bad_kinds(ws):
    _run(ws, "ok")
    (ws / "runs/sae/.ipynb_checkpoints").mkdir()
    (ws / "runs/.trash/x").mkdir(parents=True)
    (ws / "runs/sae/not-a-run").mkdir()  # no run.json: not a run
    assert [r.name for r in data.scan_runs(ws)] == ["ok"] and data.run_kinds(ws) == ["sae"]
    for kind in ("..", "../sae", "sae/../sae", "/etc", ""):
        assert data.scan_runs(ws, kind) == []
    for kind, name in (("sae", "../ok"), ("..", "ok"), ("sae", ".."), ("sae", "a/b")):
        with pytest.raises(ExplorerError, match="not a valid run"):
            data.get_run(kind, name, ws)
    with pytest.raises(ExplorerError, match="No 'sae' run named 'nope'"):
        data.get_run("sae", "nope", ws)


def test_a_workspace_whose_runs_folder_is_a_link_out_lists_nothing(ws, tmp_path):
    other = tmp_path / "other"
    create_run("sae", "x", {}, root=other)
    os.symlink(other / "runs", ws / "runs")
    assert data.scan_runs(ws) == []


def test_a_kind_folder_linked_out_gives_broken_runs(ws, tmp_path):
    other = tmp_path / "other"
    create_run("sae", "x", {}, root=other)
    (ws / "runs").mkdir()
    os.symlink(other / "runs/sae", ws / "runs/sae")
    (run,) = data.scan_runs(ws)
    assert run.status == "broken" and "points outside the workspace" in run.error


def test_artefact_paths_are_confined(ws, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    run = _run(ws, status="done")
    (run.path / "ok.json").write_text('{"a": 1}')
    (run.path / "sub").mkdir()
    other = _run(ws, "other", status="done")
    (other.path / "shared.json").write_text("[]")
    os.symlink(other.path / "shared.json", run.path / "shared.json")  # inside the workspace
    os.symlink(outside, run.path / "link.json")
    os.symlink(run.path / "loop.json", run.path / "loop.json")
    run.artefacts = {"ok": "ok.json", "sub": "sub", "shared": "shared.json",
                     "dotdot": "../other/shared.json", "abs": str(outside), "nul": "a\x00b",
                     "empty": "", "link": "link.json", "loop": "loop.json", "gone": "gone.json"}
    assert data.read_json(data.artefact(run, "ok", ws=ws), ws) == {"a": 1}
    assert data.artefact(run, "sub", ws=ws).is_dir()
    assert data.read_json(data.artefact(run, "shared", ws=ws), ws) == []
    for key, phrase in (("dotdot", "points outside the run"), ("abs", "points outside the run"),
                        ("nul", "points outside the run"), ("empty", "points outside the run"),
                        ("link", "points outside the workspace"), ("loop", "symlink loop"),
                        ("gone", "is missing"), ("nope", "has no 'nope' artefact")):
        with pytest.raises(ExplorerError, match=phrase):
            data.artefact(run, key, ws=ws)
    report = {r["artefact"]: r for r in data.artefact_report(run, ws)}
    assert report["ok"]["present"] and report["ok"]["bytes"] == 8
    assert not report["link"]["present"] and "outside" in report["link"]["problem"]


def test_read_json_is_bounded_and_checked(ws, tmp_path):
    d = ws / "f"
    d.mkdir()
    big = d / "big.json"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: refused from its size, never read
    with pytest.raises(ExplorerError, match="1024.0 MiB, more than the explorer reads"):
        data.read_json(big, ws)
    (d / "nan.json").write_text('{"x": NaN, "y": [Infinity, -Infinity]}')
    v = data.read_json(d / "nan.json", ws, expect=dict)
    assert math.isnan(v["x"]) and v["y"] == [math.inf, -math.inf]
    assert json.dumps(data.displayable(v), allow_nan=False) == \
        '{"x": "nan", "y": ["inf", "-inf"]}'
    (d / "list.json").write_text("[1]")
    with pytest.raises(ExplorerError, match="holds a JSON list, not object"):
        data.read_json(d / "list.json", ws, expect=dict)
    (d / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(ExplorerError, match="nested too deeply"):
        data.read_json(d / "deep.json", ws)
    (d / "digits.json").write_text("1" * 10_000)  # past Python's int-parsing limit
    with pytest.raises(ExplorerError, match="not valid JSON"):
        data.read_json(d / "digits.json", ws)
    (d / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ExplorerError, match="not valid JSON"):
        data.read_json(d / "latin1.json", ws)
    with pytest.raises(ExplorerError, match="is missing"):
        data.read_json(d / "gone.json", ws)
    with pytest.raises(ExplorerError, match="not a regular file"):
        data.read_json(d, ws)
    if CAN_FIFO:
        os.mkfifo(d / "fifo.json")  # opening it would block forever
        with pytest.raises(ExplorerError, match="not a regular file"):
            data.read_json(d / "fifo.json", ws)
        with pytest.raises(ExplorerError, match="not a regular file"):
            data.read_jsonl(d / "fifo.json", ws)


def test_read_jsonl_reads_the_tail_and_skips_bad_lines(ws):
    log = ws / "log.jsonl"
    lines = [json.dumps({"step": i, "loss": math.nan if i % 7 == 0 else 1.0 / (i + 1)})
             for i in range(5000)]
    lines[10] = "not json"
    lines[20] = "[1, 2]"
    lines[30] = "[" * 50_000
    log.write_text("\n".join(lines) + "\n")
    recs, truncated = data.read_jsonl(log, ws, max_points=10_000)
    assert not truncated and [r["step"] for r in recs] == [i for i in range(5000)
                                                           if i not in (10, 20, 30)]
    assert math.isnan(recs[0]["loss"])
    recs, truncated = data.read_jsonl(log, ws)  # thinned, the last record kept
    assert data.MAX_POINTS // 2 < len(recs) <= data.MAX_POINTS + 1 and recs[-1]["step"] == 4999
    recs, truncated = data.read_jsonl(log, ws, max_bytes=4000, max_points=10_000)
    assert truncated and recs[-1]["step"] == 4999 and recs[0]["step"] > 4800
    assert all(isinstance(r, dict) for r in recs)


def test_check_parquet(ws):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = ws / "good.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), good)
    assert data.check_parquet(good, ws) == good
    (ws / "text.parquet").write_text("latent,density\n1,0.5\n")
    with pytest.raises(ExplorerError, match="not a Parquet file"):
        data.check_parquet(ws / "text.parquet", ws)
    raw = good.read_bytes()
    (ws / "torn.parquet").write_bytes(raw[:4] + b"\x00" * (len(raw) - 8) + raw[-4:])
    with pytest.raises(ExplorerError, match="not a readable Parquet file"):
        data.check_parquet(ws / "torn.parquet", ws)
    (ws / "tiny.parquet").write_bytes(b"PAR1PAR1")
    with pytest.raises(ExplorerError, match="not a Parquet file"):
        data.check_parquet(ws / "tiny.parquet", ws)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=20)
run_like = st.fixed_dictionaries(
    {}, optional={"kind": st.just("sae") | json_values, "name": st.just("r") | json_values,
                  "config": json_values, "created": st.text(max_size=30) | json_values,
                  "status": st.sampled_from(STATUSES) | json_values, "metrics": json_values,
                  "artefacts": st.dictionaries(st.text(max_size=12),
                                               st.text(max_size=30) | json_values,
                                               max_size=4) | json_values})


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=run_like | json_values)
def test_any_json_as_run_json_gives_a_run_or_a_broken_one(ws, doc):
    d = ws / "runs/sae/r"
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps(doc))
    run = data.read_run(d, ws)
    assert run.kind == "sae" and run.name == "r"
    if run.status == "broken":
        assert run.error
    else:
        assert run.status in STATUSES and isinstance(run.metrics, dict)
        assert all(isinstance(v, str) for v in run.artefacts.values())
        data.problems(run, ws, deep=True)  # never raises
        for key in run.artefacts:
            assert data.artefact(run, key, required=False, ws=ws) is None  # nothing there
        json.dumps(data.displayable(run.to_dict()), allow_nan=False)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_run_json_never_raise(ws, raw):
    d = ws / "runs/sae/r"
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_bytes(raw)
    run = data.read_run(d, ws)
    assert run.status == "broken" or run.status in STATUSES
