"""The layout the code promises: short files and functions, and imports that only go down the floors."""
import ast

import pytest

from conftest import ROOT

SOURCES = sorted(p for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "outputs" not in p.parts)
LIBRARY = [p for p in SOURCES if p.relative_to(ROOT).parts[0] in ("dataloading", "models", "training", "utils", "evaluation")]


def project_imports(path) -> set[str]:
    """Top-level project modules a file imports: e.g. {"utils.cli", "models.unet"}."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("dataloading", "models", "training", "utils", "evaluation")}


def test_the_scan_sees_the_project():
    assert len(SOURCES) > 50 and any(p.name == "unet.py" for p in LIBRARY)


@pytest.mark.parametrize("path", [p for p in SOURCES if p.relative_to(ROOT).parts[0] != "benchmarks"], ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_functions_are_short(path):
    """Outside benchmarks/ (scripts measured by what they measure): files of at most 300 lines, functions of at most 60."""
    lines = path.read_text().splitlines()
    assert len(lines) <= 300, f"{len(lines)} lines"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 60, f"{node.name} is {length} lines"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_floors(path):
    """utils/ is the ground floor; no library module imports the command-line plumbing; evaluation never imports training."""
    room, imports = path.relative_to(ROOT).parts[0], project_imports(path)
    if room == "utils":
        assert all(name.startswith("utils") for name in imports), imports
    if room in ("dataloading", "models", "training", "evaluation"):
        assert "utils.cli" not in imports, imports
    if room == "dataloading":
        assert not any(name.split(".")[0] in ("models", "training", "evaluation") for name in imports), imports
    if room in ("models", "evaluation"):
        assert not any(name.startswith("training") for name in imports), imports
    if room == "models":
        assert not any(name.startswith("evaluation") for name in imports), imports
