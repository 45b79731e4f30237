"""Self-describing, atomic, code-free checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:

    {"kind": "clip" | "decoder" | "prior" | ..., "format_version": 1,
     "config": {...}, "tokenizer": {...}, "model": state_dict, ...}

It is written to a temporary file and renamed into place, so an interrupted
run never leaves a broken file, and read with ``torch.load(weights_only=True)``,
which refuses to unpickle code.

Shared weights (``pretrained/``) use the same dict in safetensors, the format
model hubs share weights in: the tensors as tensors, and everything else as
JSON in the file's metadata, where a tensor's place holds ``{"tensor": key}``.
``load_checkpoint`` reads both, so both pass the same checks.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from utils.errors import UserError

FORMAT_VERSION = 1
KINDS = ("clip", "decoder", "superres", "prior", "judge")  # every kind of checkpoint the trainers and the judge write
WEIGHTS_SUFFIX = ".safetensors"
REPOSITORY = Path(__file__).resolve().parents[1]
PRETRAINED_DIR = REPOSITORY / "pretrained"  # the shipped weights, one file per stage
CHECKPOINT_DIR = Path("checkpoints")  # where the trainers write, relative to where they run


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` tagged with ``kind``; returns the path. A ``.safetensors`` path writes shared weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"kind": kind, "format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if path.suffix == WEIGHTS_SUFFIX:
                f.write(weights_bytes(data))
            else:
                torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes the file private (0600); a checkpoint is as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def weights_bytes(data: dict[str, Any]) -> bytes:
    """A checkpoint dict as safetensors: its tensors by dotted key, the rest as JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}

    def split(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
            return {"tensor": key}
        if isinstance(value, dict):
            return {k: split(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            items = [split(v, f"{key}.{i}") for i, v in enumerate(value)]
            return {"tuple": items} if isinstance(value, tuple) else items
        return value

    tree = split(data, "")
    return safetensors_bytes(tensors, metadata={"checkpoint": json.dumps(tree)})


def read_weights(path: Path) -> dict[str, Any]:
    """The inverse of ``weights_bytes``, read from a file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            tree = json.loads((f.metadata() or {})["checkpoint"])
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as err:
        raise ValueError(str(err)) from None

    def join(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"tensor"}:
            return tensors[value["tensor"]]
        if isinstance(value, dict) and set(value) == {"tuple"}:
            return tuple(join(v) for v in value["tuple"])
        if isinstance(value, dict):
            return {k: join(v) for k, v in value.items()}
        return [join(v) for v in value] if isinstance(value, list) else value

    return join(tree)


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...], map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint, refusing a missing, corrupt or wrong-kind file with one clear line."""
    path = Path(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == WEIGHTS_SUFFIX:
            data = read_weights(path)  # always on the CPU; a model's load_state_dict moves it
        else:
            data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint of this project ({first_line[:120]})") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise UserError(f"checkpoint {path} is not a checkpoint of this project (no 'kind' field)")
    if data["kind"] not in kinds:
        raise UserError(f"checkpoint {path} holds a {data['kind']!r} model, but a {' or '.join(map(repr, kinds))} model is needed")
    return data


def export_weights(checkpoint_path: str | Path, weights_path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """A training checkpoint as shareable weights: the same fields less the training state (optimizer, RNGs, history),
    plus ``extra`` fields (e.g. ``{"sampling": {"guidance_scale": 1.6}}``, the scale the weights sample at by default)."""
    data = load_checkpoint(checkpoint_path, KINDS)
    payload = {k: v for k, v in data.items() if k not in ("kind", "format_version", "training")}
    return save_checkpoint(weights_path, data["kind"], {**payload, **(extra or {})})


def average_weights(paths: list[str | Path], kind: str) -> dict[str, Any]:
    """The uniform average of runs' sampling weights (a "model soup", Wortsman et al. 2022, eq. 1: theta = 1/k sum_i theta_i),
    as a checkpoint payload of ``kind``. Averaging is only meaningful between runs that began from the same weights (e.g. warm
    restarts with other seeds from one checkpoint), so the runs must share one config, CLIP included; a guidance scale the
    first names is not carried over. Returns the first file's fields with its ``ema`` replaced by the average."""
    if len(paths) < 2:
        raise UserError("averaging takes at least two weight files")
    runs = [load_checkpoint(path, kind) for path in paths]
    for path, run in zip(paths[1:], runs[1:]):
        if run["config"] != runs[0]["config"] or run["ema"].keys() != runs[0]["ema"].keys():
            raise UserError(f"{path} has another config than {paths[0]} (architecture, data or CLIP): their weights cannot be averaged")
    ema = {name: sum(run["ema"][name].float() for run in runs) / len(runs) for name in runs[0]["ema"]}  # float32 tensors, each shaped as in one run
    return {**{k: v for k, v in runs[0].items() if k not in ("kind", "format_version", "training", "sampling")}, "ema": ema}


def extra_ema_path(save_path: str | Path, decay_name: str) -> Path:
    """Where the EMA of decay ``decay_name`` (e.g. "0.995", from --extra_ema_decays) is written: beside the checkpoint, as a sampling-only checkpoint."""
    path = Path(save_path)
    return path.with_name(f"{path.stem}_ema{decay_name}{path.suffix}")


def default_weights(name: str) -> Path:
    """A stage's weights when no path is given: ``checkpoints/<name>.pt`` when the user trained that stage there,
    otherwise the shipped ``pretrained/<name>.safetensors`` (when it ships), otherwise the checkpoint path (which then
    says it does not exist)."""
    trained, shipped = CHECKPOINT_DIR / f"{name}.pt", PRETRAINED_DIR / f"{name}{WEIGHTS_SUFFIX}"
    return shipped if not trained.exists() and shipped.exists() else trained


def checkpoint_to_resume(path: str | Path, kind: str, log: Callable[[str], None]) -> dict | None:
    """The checkpoint a resumed run continues from, or None (said in the log) when none has been written yet.

    Loaded onto the CPU, whatever device the run trains on: each ``load_state_dict`` (model, EMA, optimizer)
    copies its tensors to where its parameters live, and the rest (random states, the epoch's data order)
    belongs on the CPU. Mapping it to a GPU instead put the data order there, which then indexed CPU images.
    """
    if not Path(path).exists():
        log(f"--resume: no checkpoint at {path} yet, so training starts from scratch")
        return None
    return load_checkpoint(path, kind, map_location="cpu")


def random_state_to_list(value):
    """Python's ``random`` state (nested tuples) as nested lists: storable in a weights-only checkpoint."""
    return [random_state_to_list(v) for v in value] if isinstance(value, tuple) else value


def random_state_from_list(value):
    """The inverse of ``random_state_to_list``: lists back to the tuples ``random.setstate`` takes."""
    return tuple(random_state_from_list(v) for v in value) if isinstance(value, list) else value
