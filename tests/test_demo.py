"""The demo's registry of steps: every registered step imports, steps run in order, a failing
optional step is reported without stopping the demo, and the demo ends with the explorer
command."""

from __future__ import annotations

from pathlib import Path

import pytest

from interp import demo
from interp.demo import DEMO_STEPS, DemoStep, resolve_step, run_demo
from interp.workspace import run_context


def test_every_registered_step_resolves():
    names = [s.name for s in DEMO_STEPS]
    assert names[:2] == ["activations", "sae"] and len(set(names)) == len(names)
    for step in DEMO_STEPS:
        assert callable(resolve_step(step)), step


def ok_step(workspace: Path, echo) -> Path:
    with run_context("toy", "ok", {}, root=workspace) as run:
        run.finish(metrics={"score": 1.0})
    echo("ok: ran")
    return run.path


def bad_step(workspace: Path, echo) -> Path:
    raise RuntimeError("no model here")


def test_run_demo_goes_on_past_an_optional_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ok_step", ok_step, raising=False)
    monkeypatch.setattr(demo, "bad_step", bad_step, raising=False)
    lines: list[str] = []
    steps = [DemoStep("bad", "interp.demo:bad_step"), DemoStep("ok", "interp.demo:ok_step")]
    done = run_demo(tmp_path / "ws", echo=lines.append, steps=steps)
    assert list(done) == ["ok"] and (done["ok"] / "run.json").is_file()
    text = "\n".join(lines)
    assert "bad: FAILED (RuntimeError: no model here)" in text and '"score": 1.0' in text
    assert lines[-1].strip() == f"interp app {tmp_path / 'ws'}"


def test_run_demo_stops_on_a_required_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "bad_step", bad_step, raising=False)
    with pytest.raises(RuntimeError, match="no model here"):
        run_demo(tmp_path, echo=lambda s: None,
                 steps=[DemoStep("bad", "interp.demo:bad_step", required=True)])
