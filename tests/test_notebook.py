"""demo.ipynb runs top to bottom with tiny quick-trained models, draws its figures, and agrees with the training runs."""
import re

import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def test_demo_notebook_executes_without_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_TINY", "1")  # tiny models and few sampler steps
    monkeypatch.setenv("DEMO_CHECKPOINTS", str(tmp_path / "checkpoints"))  # never the user's checkpoints
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    assert (ROOT / "demo.ipynb").stat().st_size < 2_000_000, "demo.ipynb is over 2 MB: clear its outputs before committing"
    notebook = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    # execute() raises CellExecutionError on the first cell that fails, with that cell's traceback.
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 12, f"expected a figure for every step of the tour, got {len(images)}"
    text = "".join(o.get("text", "") for o in outputs)
    for expected in ("zero-shot", "PSNR", "cosine to real images", "trained just now"):
        assert expected in text
    # The notebook recomputes CLIP's and the prior's figures: they must match what the training runs wrote.
    differences = [float(d) for d in re.findall(r"largest difference from [^:]+: ([0-9.]+)", text)]
    assert len(differences) == 2 and max(differences) < 1e-3, differences
    assert (tmp_path / "checkpoints" / "demo" / "superres.pt").exists()
