"""Every notebook runs top to bottom with quick settings: on a tiny random-weight model in the
fast tier (the code paths, in seconds), on the default model in the slow tier (the figures)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="session")
def notebook_model_dir(tmp_path_factory):
    """A 4-layer tiny Llama: deep enough for the notebooks' early/middle/late layer choices."""
    from interp.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("nb-model"), "llama", seed=0, n_layers=4)


def run_notebook(path: Path, tmp_path: Path, monkeypatch, model: str | None) -> None:
    monkeypatch.setenv("INTERP_QUICK", "1")
    monkeypatch.setenv("INTERP_WORKSPACE", str(tmp_path / "workspace"))
    if model is not None:
        monkeypatch.setenv("INTERP_MODEL", model)
    else:
        monkeypatch.delenv("INTERP_MODEL", raising=False)
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} has outputs saved in git; clear them"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type in ("execute_result", "display_data")]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in shown), \
        "the notebook displayed no plotly figure"
    assert (tmp_path / "workspace" / "runs").is_dir()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_tiny_model(path, tmp_path, monkeypatch, notebook_model_dir):
    assert "INTERP_MODEL" in path.read_text(), \
        f"{path.name} must read its model from $INTERP_MODEL (the tests run it on a tiny model)"
    run_notebook(path, tmp_path, monkeypatch, str(notebook_model_dir))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_default_model(path, tmp_path, monkeypatch):
    run_notebook(path, tmp_path, monkeypatch, None)


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 2
