"""Load official Moebius / PixelHacker checkpoints, strictly and safely.

The official ``diffusion_pytorch_model.bin`` is a pickle of the whole wrapper's flat state_dict
(``embedding_layer.weight`` + ``diff_model.*``, no config or optimizer state). It is read with
``torch.load(weights_only=True)``, which refuses any pickle that would run code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from ..models._registry import config_from_dict, get_config, get_family
from .locations import CONFIG_NAME, MODEL_NAME, OFFICIAL_WEIGHTS_NAME

# A key that only one family has decides which family a checkpoint holds.
_FAMILY_MARKERS = {
    "diff_model.conv_in.conv_dw.weight": "moebius",
    "diff_model.conv_in.weight": "pixelhacker",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat tensor dict from ``.bin``/``.pt``/``.pth`` (safe unpickling) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to unpickle (it is not a plain tensor checkpoint: {exc})".splitlines()[0]) from None
    except Exception as exc:  # torch and safetensors raise many types for a damaged file
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from None
    return _as_tensor_dict(state, str(path))


def _as_tensor_dict(state: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping) and set(state) == {"state_dict"}:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: expected a non-empty dict of tensors, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not named tensors: {', '.join(map(str, bad[:5]))}")
    return dict(state)


def infer_family(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """``"moebius"`` or ``"pixelhacker"`` from the keys, or a CheckpointError saying why neither."""
    found = {family for key, family in _FAMILY_MARKERS.items() if key in state}
    if len(found) == 1:
        return found.pop()
    if not any(k.startswith("diff_model.") for k in state):
        hint = ""
        if any(k.startswith(("encoder.", "decoder.")) for k in state):
            hint = " (it looks like a VAE checkpoint)"
        raise CheckpointError(f"{source}: not a Moebius or PixelHacker checkpoint, no 'diff_model.*' keys{hint}")
    raise CheckpointError(f"{source}: cannot tell student from teacher (expected one of {', '.join(_FAMILY_MARKERS)})")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state`` into ``model``: every mismatch is reported before anything is written."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:8])}{more}")
        raise CheckpointError(f"{source} does not match the architecture; " + "; ".join(parts))
    cast = {k: v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v for k, v in state.items()}
    model.load_state_dict(cast, strict=True, assign=True)


def build_from_state_dict(state: Mapping[str, torch.Tensor], kind: str | None = None, config: Any = None,
                          source: str = "checkpoint") -> nn.Module:
    """Build the model a state dict belongs to (official preset unless ``config`` is given) and load it."""
    family = get_family(kind or infer_family(state, source))
    if config is None:
        config = get_config(family.preset)
    with torch.device("meta"):
        model = family.build(config)
    load_into(model, state, source)
    return model.eval()


def load_official(path_or_state_dict: str | Path | Mapping[str, torch.Tensor], kind: str | None = None, *,
                  device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Load an official (or converted) Moebius/PixelHacker checkpoint; returns the model in eval mode.

    ``path_or_state_dict``: an official ``diffusion_pytorch_model.bin``, a ``.safetensors`` with the same keys,
    a folder holding either of those (or our ``config.json`` + ``model.safetensors``), or a state dict.
    ``kind``: ``"moebius"``/``"student"`` or ``"pixelhacker"``/``"teacher"``; inferred from the keys when None.
    The model's forward is ``model(x, timesteps, input_ids)`` -> ε; see
    :class:`moebius.models.LatentCategoryDenoiser`. Raises :class:`CheckpointError` naming missing and
    unexpected keys; nothing is partially loaded.
    """
    config = None
    if isinstance(path_or_state_dict, Mapping):
        # The model takes its tensors by assignment; copy the caller's, so that training the model (BatchNorm
        # statistics, optimizer steps) never writes into a dict the caller still holds.
        source = "state dict"
        state = {k: v.clone() for k, v in _as_tensor_dict(path_or_state_dict, source).items()}
    else:
        path = Path(path_or_state_dict)
        source = str(path)
        if path.is_dir():
            if (path / CONFIG_NAME).is_file() and (path / MODEL_NAME).is_file():
                config = _read_config(path / CONFIG_NAME)
                path = path / MODEL_NAME
            elif (path / OFFICIAL_WEIGHTS_NAME).is_file():
                path = path / OFFICIAL_WEIGHTS_NAME
            else:
                raise CheckpointError(f"{source}: no {OFFICIAL_WEIGHTS_NAME} and no {CONFIG_NAME} + {MODEL_NAME} in this folder")
        state = read_state_dict(path)
    if config is not None and kind is not None and get_family(kind).config_cls is not type(config):
        raise CheckpointError(f"{source} holds a {type(config).family} model, not {kind!r}")
    model = build_from_state_dict(state, kind, config, source)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _read_config(path: Path) -> Any:
    try:
        return config_from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: unreadable model config ({exc})") from None
