"""Nested training state (optimizer, EMA, RNG) as safetensors + JSON: no pickle anywhere.

``save_state(folder, name, obj)`` writes ``name.safetensors`` (every tensor, keyed by its path in ``obj``)
and ``name.json`` (the structure, with tensors replaced by references). Dicts keep non-string keys and
tuples survive, so a torch optimizer's ``state_dict`` round-trips exactly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError


def pack(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """JSON-able structure of ``obj``; tensors are moved into ``tensors`` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: pack(v, tensors, f"{path}.{k}") for k, v in obj.items()}}
        return {"__items__": [[pack(k, tensors, f"{path}.k{i}"), pack(v, tensors, f"{path}.v{i}")]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} at {path or 'top level'}")


def unpack(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(data, list):
        return [unpack(v, tensors) for v in data]
    if isinstance(data, dict):
        (tag, value), = data.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__ndarray__":
            return tensors[value].numpy()
        if tag == "__dict__":
            return {k: unpack(v, tensors) for k, v in value.items()}
        if tag == "__items__":
            return {unpack(k, tensors): unpack(v, tensors) for k, v in value}
        if tag == "__tuple__":
            return tuple(unpack(v, tensors) for v in value)
        raise ValueError(f"unknown tag {tag!r} in stored state")
    return data


def save_state(folder: Path, name: str, obj: Any) -> None:
    from ..weights.serialization import save_safetensors

    tensors: dict[str, torch.Tensor] = {}
    structure = pack(obj, tensors)
    save_safetensors(tensors, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(structure))


def load_state(folder: Path, name: str) -> Any:
    """Inverse of :func:`save_state`; an unreadable file is a :class:`CheckpointError` naming it."""
    from safetensors.torch import load_file

    path = folder / f"{name}.safetensors"
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise CheckpointError(f"{path}: unreadable ({_first_line(exc)})") from None
    return unpack(read_json(folder / f"{name}.json"), tensors)


def read_json(path: Path) -> Any:
    """Parse a JSON file; an unreadable one is a :class:`CheckpointError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def capture_rng() -> dict[str, Any]:
    """Every global generator this process uses: Python, NumPy, torch CPU and CUDA."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
