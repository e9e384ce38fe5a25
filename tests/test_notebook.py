"""examples/tour.ipynb runs from top to bottom in a fresh kernel, and shows what it promises."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from _mnist import require_mnist

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TOUR = Path(__file__).resolve().parent.parent / "examples" / "tour.ipynb"


def _outputs(cell) -> list:
    return cell.get("outputs", [])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dot") is None, reason="the graph cell needs Graphviz's dot")
def test_tour_notebook_runs_and_shows_its_pictures(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CONV_DATA", str(require_mnist()))
    # a kernel of this very interpreter (the venv CI made), whatever other kernels are installed
    jupyter = tmp_path_factory.mktemp("jupyter")
    spec = jupyter / "kernels" / "tinygrad-conv-tests"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tinygrad_conv tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    nb = nbformat.read(TOUR, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="tinygrad-conv-tests",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first cell that fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    kinds = [{k for o in _outputs(c) for k in o.get("data", {})} for c in code]
    text = ["".join(o.get("text", "") for o in _outputs(c)) for c in code]
    assert "image/svg+xml" in kinds[1]  # the graph, drawn inline
    assert "match finite differences: True" in text[2]
    assert "Total params: 421,642" in text[3]
    assert "epoch 1/1" in text[4] and "test loss" in text[4]
    assert all("image/png" in k for k in kinds[5:8])  # curves, filters, mistakes
    assert list(tmp_path.iterdir()) == []  # it wrote nothing where it ran


def test_tour_is_valid_and_committed_without_outputs():
    nb = nbformat.read(TOUR, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata.kernelspec.name == "python3"
