"""Self-describing, atomic, code-free checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

    {"kind": "clip" | "decoder" | "prior" | ..., "format_version": 1,
     "config": {...}, "tokenizer": {...}, "model": state_dict, ...}

It is written to a temporary file and renamed into place, so an interrupted
run never leaves a broken file, and read with ``torch.load(weights_only=True)``,
which refuses to unpickle code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from utils.errors import UserError

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` tagged with ``kind``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"kind": kind, "format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...], map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint, refusing a missing, corrupt or wrong-kind file with one clear line."""
    path = Path(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint of this project ({first_line[:120]})") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise UserError(f"checkpoint {path} is not a checkpoint of this project (no 'kind' field)")
    if data["kind"] not in kinds:
        raise UserError(f"checkpoint {path} holds a {data['kind']!r} model, but a {' or '.join(map(repr, kinds))} model is needed")
    return data


def checkpoint_to_resume(path: str | Path, kind: str, map_location: str | torch.device, log: Callable[[str], None]) -> dict | None:
    """The checkpoint a resumed run continues from, or None (said in the log) when none has been written yet."""
    if not Path(path).exists():
        log(f"--resume: no checkpoint at {path} yet, so training starts from scratch")
        return None
    return load_checkpoint(path, kind, map_location=map_location)


def random_state_to_list(value):
    """Python's ``random`` state (nested tuples) as nested lists: storable in a weights-only checkpoint."""
    return [random_state_to_list(v) for v in value] if isinstance(value, tuple) else value


def random_state_from_list(value):
    """The inverse of ``random_state_to_list``: lists back to the tuples ``random.setstate`` takes."""
    return tuple(random_state_from_list(v) for v in value) if isinstance(value, list) else value
