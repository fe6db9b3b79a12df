"""Our checkpoint folder (``config.json`` + ``model.safetensors``) and lossless conversion to and from
the official ``diffusion_pytorch_model.bin``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError
from ..files import atomic_folder, atomic_write, os_error_in
from ..models._registry import config_from_dict, config_to_dict, get_config, get_family
from .locations import CONFIG_NAME, MODEL_NAME, OFFICIAL_WEIGHTS_NAME
from .official import build_from_state_dict, infer_family, read_state_dict


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file``; a failed write (full disk, ...) is raised as the ``OSError`` it was."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as exc:  # safetensors reports I/O errors as its own type, errno only in the message
        os_error = os_error_in(exc)
        if os_error is None:
            raise
        raise os_error from None


def save_folder(state: dict[str, torch.Tensor], config: Any, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into a new folder, atomically (:func:`moebius.files.atomic_folder`)."""
    folder = Path(folder)
    if folder.exists():
        raise CheckpointError(f"{folder} already exists; choose a new output path")
    with atomic_folder(folder) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_safetensors(tensors, tmp / MODEL_NAME, metadata={"format": "pt", "family": type(config).family})
        (tmp / CONFIG_NAME).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return folder


def save_model(model: nn.Module, folder: str | Path) -> Path:
    """Save a :class:`~moebius.models.LatentCategoryDenoiser` as our folder format."""
    return save_folder(model.state_dict(), model.config, folder)


def _write_bin(state: dict[str, torch.Tensor], path: Path) -> None:
    if path.exists():
        raise CheckpointError(f"{path} already exists; choose a new output path")
    with atomic_write(path) as handle:
        torch.save(state, handle)


def convert(src: str | Path, dst: str | Path) -> Path:
    """Official ``.bin``/``.safetensors`` -> our folder, or our folder -> official ``.bin``. Bit-exact both ways.

    Tensors keep their stored dtype; the architecture is checked by a strict load before anything is written.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("input and output are the same path")
    if src.is_dir() and (src / CONFIG_NAME).is_file():
        config = config_from_dict(json.loads((src / CONFIG_NAME).read_text()))
        state = read_state_dict(src / MODEL_NAME)
        model = build_from_state_dict(state, type(config).family, config, str(src))
        ordered = {k: state[k] for k in model.state_dict()}  # the official file's key order
        _write_bin(ordered, dst if dst.suffix else dst / OFFICIAL_WEIGHTS_NAME)
        return dst
    if src.is_dir():
        src = src / OFFICIAL_WEIGHTS_NAME
    state = read_state_dict(src)
    family = get_family(infer_family(state, str(src)))
    config = get_config(family.preset)
    build_from_state_dict(state, family.preset, config, str(src))  # validates keys and shapes
    return save_folder(state, config, dst)
