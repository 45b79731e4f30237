"""demo.ipynb runs top to bottom: on the shipped weights with no training, and with tiny quick-trained models when none ship."""
import re

import nbformat
from nbclient import NotebookClient

from conftest import ROOT
from utils.checkpoints import PRETRAINED_DIR


def execute(monkeypatch, tmp_path, **env) -> str:
    """Run the notebook (never on the user's checkpoints); returns its printed text after checking its figures."""
    monkeypatch.setenv("DEMO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert (ROOT / "demo.ipynb").stat().st_size < 2_000_000, "demo.ipynb is over 2 MB: clear its outputs before committing"
    notebook = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    # execute() raises CellExecutionError on the first cell that fails, with that cell's traceback.
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 15, f"expected a figure for every step of the tour, got {len(images)}"
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), "the interactive panel is missing"
    text = "".join(o.get("text", "") for o in outputs)
    for expected in ("zero-shot", "PSNR", "cosine to real images", "trained just now", "thickness AUC now", "slant AUC now"):
        assert expected in text
    # The notebook recomputes CLIP's and the prior's figures: they must match what the training runs wrote.
    differences = [float(d) for d in re.findall(r"largest difference from [^:]+: ([0-9.]+)", text)]
    assert len(differences) == 2 and max(differences) < 1e-3, differences
    return text


def test_demo_notebook_runs_on_the_shipped_weights_and_agrees_with_their_model_card(tmp_path, monkeypatch):
    assert (PRETRAINED_DIR / "decoder.safetensors").exists() and (PRETRAINED_DIR / "quality.json").exists()
    text = execute(monkeypatch, tmp_path)
    assert "trained just now: nothing" in text and str(PRETRAINED_DIR / "decoder.safetensors") in text
    now, card = map(float, re.search(r"judge accuracy now: ([0-9.]+) on 200 images \(model card: ([0-9.]+)", text).groups())
    assert abs(now - card) < 0.04, (now, card)  # 200 images against 1,000: a binomial standard error of about 1 point near 97 %
    assert "style models trained just now: nothing" in text
    for name in ("thickness", "slant"):  # 8 pairs per digit against the card's 20: the shipped words must steer nearly as well
        now, card = map(float, re.search(name + r" AUC now: ([0-9.]+) .*?\(model card: ([0-9.]+)", text).groups())
        assert now > card - 0.05, (name, now, card)
    assert not (tmp_path / "checkpoints" / "demo").exists()


def test_demo_notebook_quick_trains_what_does_not_ship(tmp_path, monkeypatch):
    text = execute(monkeypatch, tmp_path, DEMO_TINY="1", DEMO_PRETRAINED="none")  # tiny models and few sampler steps
    assert "there is no model card to compare with" in text
    assert (tmp_path / "checkpoints" / "demo" / "superres.pt").exists()
