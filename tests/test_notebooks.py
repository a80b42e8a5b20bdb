"""Every notebook runs top to bottom (quick settings, default model: slow)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_QUICK", "1")
    monkeypatch.setenv("INTERP_WORKSPACE", str(tmp_path / "workspace"))
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


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 2
