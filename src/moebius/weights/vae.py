"""The autoencoder folder format: ``config.json`` + ``diffusion_pytorch_model.{safetensors,bin}``.

A diffusers-layout ``AutoencoderKL`` (the official VAE of hf.co/hustvl/PixelHacker, or ours), or our
:class:`~moebius.models.space_to_depth.SpaceToDepth` (``"_class_name": "SpaceToDepth"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..models.space_to_depth import CLASS_NAME as SPACE_TO_DEPTH
from ..models.space_to_depth import SpaceToDepth, SpaceToDepthConfig
from ..models.vae import AutoencoderKL, VAEConfig, rename_legacy_attention_keys
from .locations import CONFIG_NAME, VAE_WEIGHT_NAMES
from .official import load_into, read_state_dict

Autoencoder = AutoencoderKL | SpaceToDepth


def vae_config_dict(config: VAEConfig) -> dict[str, Any]:
    """A diffusers-style ``config.json`` dict for ``config`` (readable by :meth:`VAEConfig.from_config_dict`)."""
    levels = len(config.block_out_channels)
    out: dict[str, Any] = {"_class_name": "AutoencoderKL", "act_fn": "silu",
                           "down_block_types": ["DownEncoderBlock2D"] * levels,
                           "up_block_types": ["UpDecoderBlock2D"] * levels}
    for key, value in vars(config).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def load_vae(folder: str | Path) -> Autoencoder:
    """Load an autoencoder folder (config.json + diffusion_pytorch_model.{safetensors,bin}) strictly.

    A diffusers-layout ``AutoencoderKL``, or our :class:`SpaceToDepth` (``"_class_name": "SpaceToDepth"``).
    """
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    weights = next((folder / n for n in VAE_WEIGHT_NAMES if (folder / n).is_file()), None)
    if not config_path.is_file() or weights is None:
        raise CheckpointError(f"VAE folder {folder} needs {CONFIG_NAME} and one of {', '.join(VAE_WEIGHT_NAMES)}")
    try:
        raw = json.loads(config_path.read_text())
        if raw.get("_class_name") == SPACE_TO_DEPTH:
            config: VAEConfig | SpaceToDepthConfig = SpaceToDepthConfig.from_config_dict(raw)
        else:
            config = VAEConfig.from_config_dict(raw)
    except (OSError, json.JSONDecodeError, AttributeError, ConfigError) as exc:
        raise CheckpointError(f"{config_path}: unreadable VAE config ({exc})") from None
    state = read_state_dict(weights)
    rename_legacy_attention_keys(state)
    with torch.device("meta"):
        vae = SpaceToDepth(config) if isinstance(config, SpaceToDepthConfig) else AutoencoderKL(config)
    load_into(vae, state, str(weights))
    return vae.eval()


def save_vae(vae: Autoencoder, folder: Path) -> None:
    """Write ``vae`` as :func:`load_vae` reads it into a new or empty ``folder``."""
    from .serialization import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    config = vae.config.to_config_dict() if isinstance(vae, SpaceToDepth) else vae_config_dict(vae.config)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    save_safetensors(state, folder / VAE_WEIGHT_NAMES[0], metadata={"format": "pt"})
