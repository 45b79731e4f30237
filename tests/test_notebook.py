"""demo.ipynb runs top to bottom: executed with tiny quick-trained models, every cell must succeed."""
import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT


def test_demo_notebook_executes_without_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_TINY", "1")  # tiny models and few sampler steps
    monkeypatch.setenv("DEMO_CHECKPOINTS", str(tmp_path / "checkpoints"))  # never the user's checkpoints
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit demo.ipynb with its outputs stripped"
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 12, f"expected a figure for every step of the tour, got {len(images)}"
    text = "".join(o.get("text", "") for o in outputs)
    for expected in ("zero-shot", "PSNR", "cosine to real images", "trained just now"):
        assert expected in text
    assert (tmp_path / "checkpoints" / "demo" / "superres.pt").exists()


@pytest.fixture(autouse=True)
def _quiet_kernel_logs(caplog):
    caplog.set_level("ERROR")
