"""docs/notebook.ipynb runs from top to bottom (with few steps) and shows what it says:
the model's description, pictures inline, the layer gallery and an HTML5 video."""
from __future__ import annotations

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient (a test dependency) is not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat (a test dependency) is not installed")
pytest.importorskip("ipykernel", reason="ipykernel (a test dependency) is not installed")

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebook.ipynb"


def test_the_notebook_runs_and_shows_its_pictures(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_VIS_NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("CNN_VIS_HOME", str(tmp_path))   # the layer gallery is made here
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [[output for output in cell.get("outputs", [])]
               for cell in notebook.cells if cell.cell_type == "code"]
    shown = [{kind for output in cell for kind in output.get("data", {})} for cell in outputs]
    text = ["".join(output.get("text", "") + output.get("data", {}).get("text/plain", "")
                    for output in cell) for cell in outputs]
    assert "VisModel('efficientnet_lite0', input 224x224" in text[0]
    assert "image/png" in shown[1] and "image/png" in shown[2]       # the dreams
    assert "dream " in text[2] and "intense " in text[2]             # the recipes listed
    assert "image/png" in shown[3]                                   # the layer gallery
    assert "text/html" in shown[4] and "wrote " in text[4]           # the zoom, as a video
    assert "flicker " in text[5] and "image/png" in shown[5]         # the video's last frame
    assert not any(output.get("output_type") == "error" for cell in outputs for output in cell)
