"""Building the networks a run needs from its config: student, teacher, VAE encoder, E-LatentLPIPS."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from .config import ModelConfig, PerceptualConfig, VAESettings

logger = logging.getLogger("moebius.train")


def _preset_config(preset: str, overrides: dict[str, Any], key: str) -> Any:
    from ..models import config_from_dict, config_to_dict, get_config

    base = config_to_dict(get_config(preset))
    unknown = sorted(set(overrides) - set(base) - {"family"})
    if unknown:
        raise ConfigError(f"{key}: unknown field(s) of preset {preset!r}: {', '.join(unknown)}")
    return config_from_dict({**base, **overrides})


def build_denoiser(preset: str, overrides: dict[str, Any], weights: str | None, kind: str | None, key: str) -> nn.Module:
    """A preset (with overrides) freshly initialised, or a checkpoint loaded with its own config.

    ``kind`` ("moebius" / "pixelhacker") is required of the result; None accepts either family.
    """
    from ..models import get_family

    if weights is not None:
        if overrides:
            raise ConfigError(f"{key}_overrides cannot be combined with {key}_weights: the checkpoint fixes the architecture")
        from ..weights.official import load_official

        return load_official(weights, kind=kind)
    config = _preset_config(preset, overrides, f"{key}_overrides")
    family = type(config).family
    if kind is not None and family != get_family(kind).config_cls.family:
        raise ConfigError(f"{key}: preset {preset!r} is not a {kind} model")
    return get_family(family).build(config)


def build_student(config: ModelConfig) -> nn.Module:
    return build_denoiser(config.student, config.student_overrides, config.student_weights, None, "model.student").train()


def build_teacher(config: ModelConfig) -> nn.Module | None:
    if config.teacher is None:
        return None
    if config.teacher_weights is None:
        logger.warning("model.teacher_weights is not set: distilling from a randomly initialised teacher "
                       "(only meaningful in tests)")
    teacher = build_denoiser(config.teacher, config.teacher_overrides, config.teacher_weights, "pixelhacker",
                             "model.teacher")
    return teacher.eval().requires_grad_(False)


def build_vae_encoder(config: VAESettings) -> nn.Module:
    """The frozen autoencoder, a VAE without its decoder (training never decodes) or a SpaceToDepth."""
    from ..models.vae import OFFICIAL_VAE_CONFIG, TINY_VAE_CONFIG, AutoencoderKL

    if config.weights is not None:
        from ..weights.vae import load_vae

        vae = load_vae(config.weights)
    else:
        logger.warning("vae.weights is not set: encoding with a randomly initialised %s VAE (only meaningful in tests)",
                       config.preset)
        vae = AutoencoderKL(OFFICIAL_VAE_CONFIG if config.preset == "official" else TINY_VAE_CONFIG)
    if isinstance(vae, AutoencoderKL):
        vae.decoder = None
        vae.post_quant_conv = None
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    return vae.to(dtype).eval().requires_grad_(False)


def build_perceptual(config: PerceptualConfig, weight: float, warn: bool) -> nn.Module | None:
    """E-LatentLPIPS when its weights are at hand; otherwise None, said once (on the main process)."""
    if weight <= 0:
        return None
    if config.weights is None or not Path(config.weights).is_file():
        if warn:
            where = "loss.perceptual.weights is not set" if config.weights is None else f"{config.weights} does not exist"
            logger.warning("E-LatentLPIPS weights unavailable (%s): training continues WITHOUT the latent perceptual "
                           "loss (loss.perceptual_weight=%s is ignored). Put the released sdxl_latest_vgg16_tuned.pth "
                           "there to enable it.", where, weight)
        return None
    from ..perceptual.elatentlpips import load_elatentlpips

    return load_elatentlpips(config.weights)


def feature_probe_name(student: nn.Module, index: int) -> str:
    """The parameter of the last layer producing student block output ``index`` (θ_C of the paper)."""
    unet = student.diff_model
    n_down = len(unet.down_blocks)
    if index < n_down:
        block, prefix, sampler = unet.down_blocks[index], f"diff_model.down_blocks.{index}", "downsamplers"
    else:
        j = index - n_down
        block, prefix, sampler = unet.up_blocks[j], f"diff_model.up_blocks.{j}", "upsamplers"
    if getattr(block, sampler, None) is not None:
        return f"{prefix}.{sampler}.0.conv.weight"
    return f"{prefix}.attentions.{len(block.attentions) - 1}.proj_out.weight"


def output_probe_name(student: nn.Module) -> str:
    """θ_F of the paper: the last weight before the ε output."""
    names = dict(student.named_parameters())
    return "diff_model.conv_out.conv_pw.weight" if "diff_model.conv_out.conv_pw.weight" in names else "diff_model.conv_out.weight"


def find_parameter(model: nn.Module, name: str, key: str) -> nn.Parameter:
    params = dict(model.named_parameters())
    if name not in params:
        close = [n for n in params if n.endswith(name.rsplit(".", 2)[-2] + ".weight")][:3]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ConfigError(f"{key}: the student has no parameter {name!r}{hint}")
    return params[name]
