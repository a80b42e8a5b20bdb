"""The workspace contract: run directories with a `run.json` that the explorer can always list."""

from __future__ import annotations

import json
import os

import pytest

from interp.errors import WorkspaceError
from interp.workspace import (
    Run,
    create_run,
    list_runs,
    load_run,
    run_context,
    run_dir,
    workspace_root,
)

CONTRACT = {"kind", "name", "config", "created", "status", "metrics", "artefacts"}


def read_run_json(path) -> dict:
    return json.loads((path / "run.json").read_text())


def test_create_run_writes_the_contract_fields(tmp_path):
    run = create_run("sae", "r1", {"lr": 1e-3, "hooks": ["blocks.0.hook_resid_post"]}, root=tmp_path)
    assert run.path == tmp_path / "runs" / "sae" / "r1"
    d = read_run_json(run.path)
    assert set(d) == CONTRACT
    assert d["kind"] == "sae" and d["name"] == "r1" and d["status"] == "running"
    assert d["config"] == {"lr": 1e-3, "hooks": ["blocks.0.hook_resid_post"]}
    assert d["metrics"] == {} and d["artefacts"] == {}
    assert d["created"].endswith("+00:00") and d["created"][:4].isdigit()  # ISO time, UTC

    run.finish(metrics={"fvu": 0.25}, artefacts={"weights": "sae_weights.safetensors"})
    d = read_run_json(run.path)
    assert d["status"] == "done" and d["metrics"] == {"fvu": 0.25}
    assert d["artefacts"] == {"weights": "sae_weights.safetensors"}
    back = load_run(run.path)
    assert back.to_dict() == d and back.error is None
    assert [p.name for p in run.path.iterdir()] == ["run.json"]  # no temp files left behind


def test_run_context_marks_done_and_keeps_metrics(tmp_path):
    with run_context("probe", "ok", {"layer": 1}, root=tmp_path) as run:
        assert read_run_json(run.path)["status"] == "running"  # visible while the block runs
        run.metrics["acc"] = 0.9
    d = read_run_json(run.path)
    assert d["status"] == "done" and d["metrics"] == {"acc": 0.9}


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyboardInterrupt()])
def test_a_failing_block_marks_the_run_failed_and_reraises(tmp_path, exc):
    with pytest.raises(type(exc)):
        with run_context("sae", "bad", {"k": 1}, root=tmp_path) as run:
            run.metrics["step"] = 3
            raise exc
    d = read_run_json(run.path)
    assert d["status"] == "failed"
    assert d["metrics"]["step"] == 3  # what was recorded before the error is kept
    assert d["metrics"]["error"].startswith(type(exc).__name__)
    if isinstance(exc, ValueError):
        assert d["metrics"]["error"] == "ValueError: boom"


def test_a_restarted_run_keeps_created_and_gets_the_new_config(tmp_path):
    run = create_run("sae", "again", {"steps": 1}, root=tmp_path)
    run.created = "2020-01-02T03:04:05+00:00"  # as if it had started long ago
    run.finish(status="failed")
    again = create_run("sae", "again", {"steps": 2}, root=tmp_path)
    d = read_run_json(again.path)
    assert d["created"] == "2020-01-02T03:04:05+00:00" == again.created
    assert d["status"] == "running" and d["config"] == {"steps": 2}


def test_a_restart_over_an_unreadable_run_json_starts_afresh(tmp_path):
    path = run_dir("sae", "x", root=tmp_path)
    path.mkdir(parents=True)
    (path / "run.json").write_text("{not json")
    run = create_run("sae", "x", {}, root=tmp_path)
    assert read_run_json(path)["created"] == run.created != ""


def test_list_runs_by_kind_newest_first(tmp_path):
    made = {}
    for kind, name, created in [("sae", "old", "2024-01-01T00:00:00+00:00"),
                                ("sae", "new", "2024-03-01T00:00:00+00:00"),
                                ("sae", "mid", "2024-02-01T00:00:00+00:00"),
                                ("probe", "p", "2024-04-01T00:00:00+00:00")]:
        run = create_run(kind, name, {"n": name}, root=tmp_path)
        run.created = created
        run.save()
        made[name] = run
    assert [r.name for r in list_runs(tmp_path, kind="sae")] == ["new", "mid", "old"]
    assert [r.name for r in list_runs(tmp_path)] == ["p", "new", "mid", "old"]
    assert [r.name for r in list_runs(tmp_path, kind="probe")] == ["p"]
    assert list_runs(tmp_path, kind="graph") == []
    assert list_runs(tmp_path / "nowhere") == []
    first = list_runs(tmp_path, kind="sae")[0]
    assert first.config == {"n": "new"} and first.status == "running" and first.error is None


@pytest.mark.parametrize("content", [
    "{truncated", "", "[1, 2]", '{"name": "no kind"}', '{"kind": "sae", "name": "b", "config": 5}',
    b"\xff\xfe garbage",
])
def test_an_unreadable_run_is_listed_as_broken(tmp_path, content):
    good = create_run("sae", "good", {}, root=tmp_path)
    good.finish()
    bad = run_dir("sae", "broken-one", root=tmp_path)
    bad.mkdir(parents=True)
    if isinstance(content, bytes):
        (bad / "run.json").write_bytes(content)
    else:
        (bad / "run.json").write_text(content)
    runs = {r.name: r for r in list_runs(tmp_path)}
    assert set(runs) == {"good", "broken-one"}
    assert runs["good"].status == "done" and runs["good"].error is None
    broken = runs["broken-one"]
    assert broken.status == "broken" and broken.kind == "sae" and broken.path == bad
    assert "run.json" in broken.error and str(bad) in broken.error
    with pytest.raises(WorkspaceError, match="cannot be read"):
        load_run(bad)


def test_a_missing_run_json_cannot_be_loaded(tmp_path):
    with pytest.raises(WorkspaceError, match="run.json"):
        load_run(tmp_path)


@pytest.mark.parametrize("kind,name", [
    ("sae", "a/b"), ("sae", ".."), ("sae", "../escape"), ("a/b", "ok"), ("..", "ok"),
    ("sae", ""), ("sae", "/abs"), ("sae", ".hidden"), ("sae", "sp ace"),
])
def test_invalid_names_are_refused(tmp_path, kind, name):
    with pytest.raises(WorkspaceError, match="not a valid name"):
        create_run(kind, name, {}, root=tmp_path)
    with pytest.raises(WorkspaceError):
        run_dir(kind, name, root=tmp_path)
    assert not (tmp_path / "runs").exists()  # nothing was written anywhere
    assert not (tmp_path.parent / "escape").exists()


def test_valid_names_are_accepted(tmp_path):
    for name in ["a", "v1.2", "sae_16k+topk-32", "0"]:
        assert create_run("sae", name, {}, root=tmp_path).path.name == name


def test_artefact_paths_stay_inside_the_run(tmp_path):
    run = create_run("sae", "r", {}, root=tmp_path)
    (run.path / "sub").mkdir()
    (run.path / "sub" / "w.safetensors").write_bytes(b"x")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    os.symlink(secret, run.path / "link.txt")
    run.finish(artefacts={"w": "sub/w.safetensors", "up": "../../../secret.txt",
                          "abs": str(secret), "link": "link.txt", "dotdot": "sub/../../r/sub"})
    run = load_run(run.path)
    assert run.artefact("w") == (run.path / "sub" / "w.safetensors").resolve()
    assert run.artefact("dotdot") == (run.path / "sub").resolve()  # ".." that stays inside is fine
    for key in ["up", "abs", "link"]:
        with pytest.raises(WorkspaceError, match="outside"):
            run.artefact(key)


def test_interp_workspace_env_sets_the_root(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    monkeypatch.setenv("INTERP_WORKSPACE", str(root))
    assert workspace_root() == root
    assert workspace_root(tmp_path / "explicit") == tmp_path / "explicit"  # the argument wins
    run = create_run("sae", "env", {"a": 1})
    assert run.path == root / "runs" / "sae" / "env" and (run.path / "run.json").is_file()
    assert [r.name for r in list_runs()] == ["env"]
    monkeypatch.delenv("INTERP_WORKSPACE")
    assert workspace_root() == type(root)("workspace")


def test_finish_refuses_an_unknown_status(tmp_path):
    run = create_run("sae", "s", {}, root=tmp_path)
    with pytest.raises(WorkspaceError, match="status"):
        run.finish(status="finished")
    assert read_run_json(run.path)["status"] == "running"


def test_run_path_override_writes_there(tmp_path):
    out = tmp_path / "elsewhere" / "store"
    run = create_run("activations", "store", {"x": 1}, root=tmp_path / "ws", path=out)
    assert run.path == out and read_run_json(out)["kind"] == "activations"
    assert not (tmp_path / "ws").exists()
    assert isinstance(load_run(out), Run)
