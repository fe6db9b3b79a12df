"""Assembling a pipeline from a weights folder, and writing one. Our pipeline layout, written by
:func:`save_pipeline`::

    <root>/moebius_pipeline.json     format marker, variant
    <root>/unet/config.json + model.safetensors
    <root>/vae/config.json + diffusion_pytorch_model.safetensors   (diffusers AutoencoderKL layout)
    <root>/scheduler.json            diffusers DDIMScheduler config

The official layout, and where weights are looked for, are in :mod:`moebius.weights.locations`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from ..files import atomic_folder
from ..schedulers.ddim import DDIMConfig, scheduler_config_dict
from ..weights.locations import (CONFIG_NAME, OFFICIAL_WEIGHTS_NAME, PIPELINE_FILE, VAE_REPO, VAE_WEIGHT_NAMES,
                                 missing_weights_message, official_unet_dir)
from ..weights.official import load_official
from ..weights.serialization import save_model
from ..weights.vae import Autoencoder, load_vae, save_vae
from .presets import check_call_defaults

SCHEDULER_FILE = "scheduler.json"
_FORMAT = "moebius-pipeline"
_FORMAT_VERSION = 1


@dataclass
class PipelineParts:
    """What a pipeline is built from: U-Net (eval mode), VAE (eval mode), scheduler config, variant, and the
    call defaults the weights need (``InpaintPreset`` fields, e.g. ``{"guidance_scale": 1.0}``)."""

    unet: nn.Module
    vae: Autoencoder  # AutoencoderKL or SpaceToDepth
    scheduler_config: DDIMConfig
    variant: str | None
    defaults: dict[str, Any] = field(default_factory=dict)


def _read_scheduler(path: Path) -> DDIMConfig:
    try:
        return DDIMConfig.from_config_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: unreadable scheduler config ({exc})") from None


def _load_unet(folder: Path) -> nn.Module:
    if not (folder / OFFICIAL_WEIGHTS_NAME).is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file():
        return load_official(folder / "diffusion_pytorch_model.safetensors")
    return load_official(folder)


def load_pipeline_parts(path: str | Path, variant: str | None = None, vae: str | Path | None = None) -> PipelineParts:
    """Read either layout from a local folder. ``vae`` overrides where the VAE folder is."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such folder; " + missing_weights_message(root, variant))
    marker = root / PIPELINE_FILE
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{marker}: unreadable ({exc})") from None
        if info.get("format") != _FORMAT or info.get("format_version") != _FORMAT_VERSION:
            raise CheckpointError(f"{marker}: not a {_FORMAT} v{_FORMAT_VERSION} folder")
        saved_variant = info.get("variant")
        if variant is not None and saved_variant is not None and variant != saved_variant:
            raise CheckpointError(f"{root} holds variant {saved_variant!r}, not {variant!r}")
        defaults = info.get("defaults", {})
        try:
            check_call_defaults(defaults)
        except ConfigError as exc:
            raise CheckpointError(f"{marker}: 'defaults': {exc}") from None
        unet = load_official(root / "unet")
        scheduler = _read_scheduler(root / SCHEDULER_FILE) if (root / SCHEDULER_FILE).is_file() else DDIMConfig()
        return PipelineParts(unet, load_vae(Path(vae) if vae else root / "vae"), scheduler, saved_variant, defaults)
    unet_dir, chosen = official_unet_dir(root, variant)
    vae_dir = Path(vae) if vae else root / "vae"
    if not (vae_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"VAE missing: put {vae_dir / CONFIG_NAME} and {vae_dir / VAE_WEIGHT_NAMES[1]} "
                              f"(from hf.co/{VAE_REPO}, folder vae/)")
    return PipelineParts(_load_unet(unet_dir), load_vae(vae_dir), DDIMConfig(), chosen)


def save_pipeline(parts: PipelineParts, folder: str | Path) -> Path:
    """Write our layout into a new (or empty) folder, atomically: a temp folder renamed into place."""
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CheckpointError(f"{folder} already exists and is not an empty folder; choose a new output path")
    with atomic_folder(folder, replace=True) as tmp:  # replaces only an empty folder (checked above)
        save_model(parts.unet, tmp / "unet")
        save_vae(parts.vae, tmp / "vae")
        (tmp / SCHEDULER_FILE).write_text(json.dumps(scheduler_config_dict(parts.scheduler_config), indent=2) + "\n")
        info = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "variant": parts.variant}
        if parts.defaults:
            info["defaults"] = parts.defaults  # checked when the pipeline was built
        (tmp / PIPELINE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return folder
