"""Output paths: checked before the work that fills them starts, so a long run never dies at its last write."""
from __future__ import annotations

import json
from pathlib import Path

from utils.errors import require


def check_output_file(path: str | Path, flag: str) -> Path:
    """Refuse a file path that is an existing folder, or lies under an existing file."""
    path = Path(path)
    require(not path.is_dir(), f"{flag} {path} is an existing folder; give a file path inside it, e.g. {path / path.name}")
    _check_parents(path, flag)
    return path


def check_output_folder(path: str | Path, flag: str) -> Path:
    """Refuse a folder path that is an existing file, or lies under one."""
    path = Path(path)
    require(not path.is_file(), f"{flag} {path} is an existing file; give a folder")
    _check_parents(path, flag)
    return path


def _check_parents(path: Path, flag: str) -> None:
    blocking = next((parent for parent in path.parents if parent.is_file()), None)
    require(blocking is None, f"{flag} {path} lies under the file {blocking}, which cannot hold it")


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
