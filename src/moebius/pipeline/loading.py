"""Finding, loading and saving the pipeline's weights: the official layout and our own.

Official layout (hf.co/hustvl/Moebius + the VAE of hf.co/hustvl/PixelHacker)::

    <root>/{pretrained,ft_places2,ft_celebahq,ft_ffhq}/diffusion_pytorch_model.bin
    <root>/vae/config.json
    <root>/vae/diffusion_pytorch_model.bin | diffusion_pytorch_model.safetensors

A variant folder may instead hold our converted format (``config.json`` + ``model.safetensors``, see
``moebius convert``). Our pipeline layout, written by :func:`save_pipeline`::

    <root>/moebius_pipeline.json     format marker, variant
    <root>/unet/config.json + model.safetensors
    <root>/vae/config.json + diffusion_pytorch_model.safetensors   (diffusers AutoencoderKL layout)
    <root>/scheduler.json            diffusers DDIMScheduler config
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from ..files import atomic_folder
from ..models.space_to_depth import CLASS_NAME as SPACE_TO_DEPTH
from ..models.space_to_depth import SpaceToDepth, SpaceToDepthConfig
from ..models.vae import AutoencoderKL, VAEConfig, rename_legacy_attention_keys
from ..weights.official import (CONFIG_NAME, MODEL_NAME, OFFICIAL_WEIGHTS_NAME, load_into, load_official,
                                read_state_dict)
from .ddim import DDIMConfig

logger = logging.getLogger(__name__)

OFFICIAL_VARIANTS = ("pretrained", "ft_places2", "ft_celebahq", "ft_ffhq")
DEFAULT_VARIANT = "ft_places2"
PIPELINE_FILE = "moebius_pipeline.json"
SCHEDULER_FILE = "scheduler.json"
VAE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
STUDENT_REPO = "hustvl/Moebius"
VAE_REPO = "hustvl/PixelHacker"
_FORMAT = "moebius-pipeline"
_FORMAT_VERSION = 1

Autoencoder = AutoencoderKL | SpaceToDepth


@dataclass
class PipelineParts:
    """What a pipeline is built from: U-Net (eval mode), VAE (eval mode), scheduler config, variant, and the
    call defaults the weights need (``InpaintPreset`` fields, e.g. ``{"guidance_scale": 1.0}``)."""

    unet: nn.Module
    vae: Autoencoder  # AutoencoderKL or SpaceToDepth
    scheduler_config: DDIMConfig
    variant: str | None
    defaults: dict[str, Any] = field(default_factory=dict)


def default_weights_dir() -> Path:
    """Where the CLI looks for weights: ``$MOEBIUS_HOME``, else ``$XDG_CACHE_HOME/moebius`` (~/.cache/moebius)."""
    if os.environ.get("MOEBIUS_HOME"):
        return Path(os.environ["MOEBIUS_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "moebius"


def holds_weights(root: Path) -> bool:
    """Whether ``root`` looks like a weights folder of either layout (it may still fail to load)."""
    return (root / PIPELINE_FILE).is_file() or any(_has_unet(root / v) for v in OFFICIAL_VARIANTS)


def missing_weights_message(root: Path, variant: str | None) -> str:
    """One line saying exactly which files to put where."""
    variant = variant or DEFAULT_VARIANT
    return (
        f"no Moebius weights in {root}: put the student at {root / variant / OFFICIAL_WEIGHTS_NAME} "
        f"(from hf.co/{STUDENT_REPO}, folder {variant}/) and the VAE at {root / 'vae' / CONFIG_NAME} + "
        f"{root / 'vae' / VAE_WEIGHT_NAMES[1]} (from hf.co/{VAE_REPO}, folder vae/), "
        f"or point to a folder written by save_pretrained ({PIPELINE_FILE}, unet/, vae/)"
    )


# ----------------------------------------------------------------------------------------------------
# VAE


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
    from ..weights.serialization import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    config = vae.config.to_config_dict() if isinstance(vae, SpaceToDepth) else vae_config_dict(vae.config)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    save_safetensors(state, folder / VAE_WEIGHT_NAMES[0], metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------------
# Scheduler


def scheduler_config_dict(config: DDIMConfig) -> dict[str, Any]:
    """A diffusers ``DDIMScheduler`` config dict describing ``config``."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "clip_sample": False,
            "timestep_spacing": "leading", **vars(config)}


def _read_scheduler(path: Path) -> DDIMConfig:
    try:
        return DDIMConfig.from_config_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: unreadable scheduler config ({exc})") from None


# ----------------------------------------------------------------------------------------------------
# Whole pipelines


def _official_unet_dir(root: Path, variant: str | None) -> tuple[Path, str]:
    present = [v for v in OFFICIAL_VARIANTS if _has_unet(root / v)]
    if variant is not None:
        if variant not in OFFICIAL_VARIANTS and not _has_unet(root / variant):
            raise CheckpointError(f"unknown variant {variant!r}; the official ones are {', '.join(OFFICIAL_VARIANTS)}")
        if not _has_unet(root / variant):
            found = f" (found: {', '.join(present)})" if present else ""
            raise CheckpointError(f"variant {variant!r} is missing: put {root / variant / OFFICIAL_WEIGHTS_NAME} "
                                  f"(from hf.co/{STUDENT_REPO}, folder {variant}/){found}")
        return root / variant, variant
    if not present:
        raise CheckpointError(missing_weights_message(root, None))
    chosen = DEFAULT_VARIANT if DEFAULT_VARIANT in present else present[0]
    if len(present) > 1:
        logger.info("several variants in %s (%s); using %s", root, ", ".join(present), chosen)
    return root / chosen, chosen


def _has_unet(folder: Path) -> bool:
    return (folder / OFFICIAL_WEIGHTS_NAME).is_file() or (folder / "diffusion_pytorch_model.safetensors").is_file() \
        or ((folder / CONFIG_NAME).is_file() and (folder / MODEL_NAME).is_file())


def _load_unet(folder: Path) -> nn.Module:
    if not (folder / OFFICIAL_WEIGHTS_NAME).is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file():
        return load_official(folder / "diffusion_pytorch_model.safetensors")
    return load_official(folder)


def check_call_defaults(defaults: Any) -> dict[str, Any]:
    """``defaults`` if it is a dict of valid :class:`~moebius.pipeline.presets.InpaintPreset` fields, else a
    ConfigError. ``name`` and ``seed`` are refused: they describe a call, not what the weights need."""
    from .presets import get_preset

    if not isinstance(defaults, dict):
        raise ConfigError(f"expected a mapping of inpainting options, got {type(defaults).__name__}")
    refused = sorted({"name", "seed"} & set(defaults))
    if refused:
        raise ConfigError(f"{', '.join(refused)} cannot be a pipeline default")
    try:
        get_preset("default").replace(**defaults)  # unknown names and bad values raise here
    except TypeError as exc:  # a value of the wrong type, e.g. a string scale from a hand-edited file
        raise ConfigError(f"a value of the wrong type ({exc})") from None
    return dict(defaults)


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
    unet_dir, chosen = _official_unet_dir(root, variant)
    vae_dir = Path(vae) if vae else root / "vae"
    if not (vae_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"VAE missing: put {vae_dir / CONFIG_NAME} and {vae_dir / VAE_WEIGHT_NAMES[1]} "
                              f"(from hf.co/{VAE_REPO}, folder vae/)")
    return PipelineParts(_load_unet(unet_dir), load_vae(vae_dir), DDIMConfig(), chosen)


def fetch_official(root: str | Path, variants: tuple[str, ...], local_files_only: bool = False) -> Path:
    """Download (or, with ``local_files_only``, only look up in the hub cache) the official files into
    ``root`` in the official layout: ``<root>/<variant>/`` from hf.co/hustvl/Moebius and ``<root>/vae/``
    from hf.co/hustvl/PixelHacker. Needs the ``huggingface_hub`` package."""
    import importlib.util

    root = Path(root).expanduser()
    if importlib.util.find_spec("huggingface_hub") is None:
        raise CheckpointError("huggingface_hub is not installed (pip install huggingface_hub); or by hand: "
                              + missing_weights_message(root, variants[0]))
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(STUDENT_REPO, allow_patterns=[f"{v}/*" for v in variants], local_dir=root,
                          local_files_only=local_files_only)
        snapshot_download(VAE_REPO, allow_patterns=["vae/*"], local_dir=root, local_files_only=local_files_only)
    except Exception as exc:  # network, authentication and cache errors come in many types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"download failed ({detail}); by hand: " + missing_weights_message(root, variants[0])) from None
    return root


def resolve_source(path: str | Path, variant: str | None, local_files_only: bool) -> Path:
    """A local folder for ``path``; the hub id ``hustvl/Moebius`` (when no such local folder exists) maps to
    :func:`default_weights_dir`, filled from the hub unless the files are already there."""
    local = Path(path).expanduser()
    if local.exists() or str(path) != STUDENT_REPO:
        return local
    root = default_weights_dir()
    wanted = variant or DEFAULT_VARIANT
    if not (_has_unet(root / wanted) and (root / "vae" / CONFIG_NAME).is_file()):
        fetch_official(root, (wanted,), local_files_only)
    return root


def save_pipeline(parts: PipelineParts, folder: str | Path) -> Path:
    """Write our layout into a new (or empty) folder, atomically: a temp folder renamed into place."""
    from ..weights.serialization import save_model

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
