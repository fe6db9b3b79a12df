"""Export the U-Net and the autoencoder to ONNX graphs with dynamic batch, height and width.

Graphs are traced with ``torch.onnx.export(dynamo=True)``: ``torch.export`` records every shape as a
symbol, so the Interactive-λ position-table resampling, the upsamplers' target sizes and all reshapes
follow the input's size and one file serves every size the PyTorch model serves. The example input is
chosen off every level's training grid (see :func:`_example_latent_size`) so that no size is special-cased.

:func:`export_weights` is what ``moebius export`` runs: it writes into a temporary folder beside the
destination and renames it into place, so a failure never leaves a half-written export behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from .. import __version__
from ..errors import InputError
from ..models.denoiser import BACKGROUND_IDS, CATEGORY_TOKENS, FOREGROUND_IDS
from ..models.space_to_depth import SpaceToDepth
from ..pipeline.loading import PipelineParts, load_pipeline_parts
from ..pipeline.presets import get_preset, list_presets
from ..schedulers.ddim import DDIMConfig, DDIMScheduler, scheduler_config_dict
from ..weights.locations import CONFIG_NAME, MODEL_NAME, holds_weights, resolve_source
from ..weights.official import load_official
from .attention import MIN_OPSET, chunk_attention_file
from .layout import (FORMAT, FORMAT_VERSION, MANIFEST_FILE, UNET_FILE, VAE_DECODER_FILE, VAE_ENCODER_FILE,
                     external_data_name, holds_export)

DEFAULT_OPSET = 18
Dtype = Literal["float32", "float16"]
Quantize = Literal["int8"]
# Graphs whose weights exceed this many bytes keep them in <name>.onnx.data: a protobuf file cannot pass
# 2 GiB, and below 1 GiB one file is simpler to move around.
EXTERNAL_DATA_BYTES = 1 << 30



class UNetGraph(nn.Module):
    """The exported U-Net call: sample (B, C_in, h, w), timestep (B,) int64, input_ids (B, 10) -> noise."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, input_ids)


class EncoderGraph(nn.Module):
    """image (B, 3, H, W) in [-1, 1] -> the posterior's mean and std (B, C_lat, H/f, W/f), unscaled."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(image)
        return posterior.mean, posterior.std


class DecoderGraph(nn.Module):
    """latent (B, C_lat, h, w), unscaled -> image (B, 3, h·f, w·f), about [-1, 1] (unclamped)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)


def _example_latent_size(multiple: int) -> tuple[int, int]:
    """A non-square (h, w) whose every level differs from the position tables' square training grids
    (10 and 14 times the multiple: no power of two appears at any level)."""
    return 10 * multiple, 14 * multiple


def _save_graph(module: nn.Module, args: tuple[torch.Tensor, ...], dynamic_shapes: dict[str, Any],
                input_names: list[str], output_names: list[str], path: Path, opset: int) -> None:
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    # The exporter reports progress on stdout and warns about optional packages; neither is for the user.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_exporter_logs():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, input_names=input_names,
                          output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=opset,
                          external_data=weight_bytes > EXTERNAL_DATA_BYTES, verbose=False)


@contextlib.contextmanager
def _quiet_exporter_logs():
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_unet(unet: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``unet`` (a :class:`~moebius.models.denoiser.LatentCategoryDenoiser`, float32) as an ONNX graph.

    Inputs ``sample`` (B, C_in, h, w) float32, ``timestep`` (B,) int64, ``input_ids`` (B, 10) int64; output
    ``noise`` (B, C_out, h, w). h and w must be multiples of ``unet.config.latent_multiple``.
    """
    config = unet.config
    multiple = getattr(config, "latent_multiple", 1)
    h, w = _example_latent_size(multiple)
    sample = torch.randn(2, config.in_channels, h, w)
    timestep = torch.tensor([10, 900], dtype=torch.int64)
    input_ids = torch.tensor([FOREGROUND_IDS, BACKGROUND_IDS], dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1)
    height, width = torch.export.Dim("latent_h", min=1), torch.export.Dim("latent_w", min=1)
    shapes = {"sample": {0: batch, 2: multiple * height, 3: multiple * width}, "timestep": {0: batch},
              "input_ids": {0: batch}}
    _save_graph(UNetGraph(unet.float()), (sample, timestep, input_ids), shapes,
                ["sample", "timestep", "input_ids"], ["noise"], Path(path), opset)


def export_autoencoder(vae: nn.Module, folder: str | Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``vae_encoder.onnx`` and ``vae_decoder.onnx`` of an AutoencoderKL or SpaceToDepth into ``folder``.

    From opset 18 on, the middle block's attention runs a block of queries at a time
    (:mod:`moebius.onnx.attention`), so memory grows with the image area rather than its square.
    """
    folder = Path(folder)
    vae = vae.float()
    f, latent_channels = vae.config.downsample_factor, vae.config.latent_channels
    h, w = _example_latent_size(1)
    image = torch.rand(2, 3, h * f, w * f) * 2 - 1
    batch = torch.export.Dim("batch", min=1)
    height, width = torch.export.Dim("latent_h", min=1), torch.export.Dim("latent_w", min=1)
    _save_graph(EncoderGraph(vae), (image,), {"image": {0: batch, 2: f * height, 3: f * width}},
                ["image"], ["mean", "std"], folder / VAE_ENCODER_FILE, opset)
    latent = torch.randn(2, latent_channels, h, w)
    _save_graph(DecoderGraph(vae), (latent,), {"latent": {0: batch, 2: height, 3: width}},
                ["latent"], ["image"], folder / VAE_DECODER_FILE, opset)
    if opset >= MIN_OPSET:
        for name in (VAE_ENCODER_FILE, VAE_DECODER_FILE):
            chunk_attention_file(folder / name)


# ----------------------------------------------------------------------------------------------------
# The manifest


def schedule_tables(config: DDIMConfig) -> dict[str, Any]:
    """The scheduler config plus ᾱ, √ᾱ and √(1 − ᾱ) per timestep and past t = 0, as torch computes them
    (float32 values, exact in JSON)."""
    scheduler = DDIMScheduler(config)
    alphas, final = scheduler.alphas_cumprod, scheduler.final_alpha_cumprod
    return {**scheduler_config_dict(config), "alphas_cumprod": alphas.tolist(),
            "sqrt_alphas_cumprod": alphas.sqrt().tolist(), "sqrt_one_minus_alphas_cumprod": (1 - alphas).sqrt().tolist(),
            "final_alpha_cumprod": float(final), "sqrt_final_alpha_cumprod": float(final.sqrt()),
            "sqrt_one_minus_final_alpha_cumprod": float((1 - final).sqrt())}


def build_manifest(parts: PipelineParts, dtype: Dtype, quantize: Quantize | None, opset: int) -> dict[str, Any]:
    """Everything a runtime in any language needs besides the three graphs (see :mod:`.layout`)."""
    unet_config, vae = parts.unet.config, parts.vae
    # An export samples with DDIM and guidance at every step, so presets that need another sampler stay out.
    presets = {name: preset.to_dict() for name in list_presets()
               if (preset := get_preset(name).replace(**parts.defaults)).scheduler == "ddim"
               and preset.guidance_interval == (0.0, 1.0)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_by": f"moebius {__version__}",
        "opset": opset,
        "precision": {"dtype": dtype, "quantize": quantize},
        "files": {"unet": UNET_FILE, "vae_encoder": VAE_ENCODER_FILE, "vae_decoder": VAE_DECODER_FILE},
        "variant": parts.variant,
        "unet": {
            "family": unet_config.family,
            "in_channels": unet_config.in_channels,
            "out_channels": unet_config.out_channels,
            "latent_multiple": getattr(unet_config, "latent_multiple", 1),
            "native_latent_size": getattr(unet_config, "sample_size", None),
            "category_tokens": CATEGORY_TOKENS,
            "cond_ids": list(BACKGROUND_IDS),
            "uncond_ids": list(FOREGROUND_IDS),
        },
        "autoencoder": {
            "class": "SpaceToDepth" if isinstance(vae, SpaceToDepth) else "AutoencoderKL",
            "downsample_factor": vae.config.downsample_factor,
            "latent_channels": vae.config.latent_channels,
            "scaling_factor": vae.config.scaling_factor,
            "shift_factor": vae.config.shift_factor,
        },
        "scheduler": schedule_tables(parts.scheduler_config),
        "defaults": parts.defaults,
        "presets": presets,
        "rules": {
            "image": "RGB uint8 -> float32 x / 255 * 2 - 1, NCHW; sides multiples of downsample_factor * "
                     "latent_multiple (pad, then crop the result)",
            "mask": "a mask value >= mask_threshold (0-255) is a hole (white = fill); masked image = image * (1 - hole)",
            "latent_mask": "hole at latent size: 'nearest' = the top-left pixel of each f x f cell, 'max' = any "
                           "pixel of it (the preset's mask_downsample)",
            "latents": "encode: (mean + std * noise if sample_posterior else mean) - shift_factor, times "
                       "scaling_factor; decode: latent / scaling_factor + shift_factor",
            "unet_input": "concat([noisy latent, latent mask, masked-image latent], channel axis)",
            "guidance": "if guidance_scale != 1: batch [x; x] with ids [uncond_ids x B; cond_ids x B], "
                        "eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
            "ddim": "leading spacing: t_k = k * (T // steps) + steps_offset, descending; strength runs the last "
                    "int(steps * strength) of them; start = pure noise if strength == 1 else sqrt(a_t) z0 + "
                    "sqrt(1 - a_t) noise; step (eta = 0, epsilon): x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), "
                    "x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, t_prev = t - T // steps, past t = 0 the final "
                    "entries; v_prediction: x0 = sqrt(a_t) x - sqrt(1 - a_t) v, eps = sqrt(1 - a_t) x + sqrt(a_t) v",
            "output": "(image + 1) / 2, clamped to [0, 1], times 255, rounded or truncated (preset's quantize)",
        },
    }


# ----------------------------------------------------------------------------------------------------
# The command


def load_source(source: str | Path) -> PipelineParts | nn.Module:
    """A whole pipeline (any folder ``--weights`` takes, or ``hustvl/Moebius``) or a single U-Net (a
    checkpoint file, or one of our U-Net folders with config.json + model.safetensors)."""
    path = Path(source).expanduser()
    if path.is_file() and path.name == MODEL_NAME and (path.parent / CONFIG_NAME).is_file():
        return load_official(path.parent)  # our format: the architecture is in the config beside it
    if path.is_file():
        return load_official(path)
    if path.is_dir() and not holds_weights(path) and (path / CONFIG_NAME).is_file() and (path / MODEL_NAME).is_file():
        return load_official(path)
    return load_pipeline_parts(resolve_source(source, None, local_files_only=True))


def export_weights(source: str | Path, out_dir: str | Path, *, dtype: Dtype = "float32",
                   quantize: Quantize | None = None, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> list[Path]:
    """Export ``source`` into ``out_dir`` -> the files written, in order.

    ``out_dir`` must not exist, be an empty folder, or (with ``overwrite``) hold an earlier export; it is
    written whole or not at all.
    """
    from .precision import convert_precision

    out = Path(out_dir).expanduser()
    _check_destination(out, overwrite)
    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype must be float32 or float16, got {dtype!r}")
    if quantize not in (None, "int8"):
        raise InputError(f"quantize must be int8, got {quantize!r}")
    if quantize is not None and dtype != "float32":
        raise InputError("--quantize int8 quantizes a float32 export; drop --dtype float16")
    if not 7 <= opset <= 23:
        raise InputError(f"opset must lie in [7, 23], got {opset}")  # what onnx 1.23 and onnxruntime 1.31 know
    parent = out.parent
    try:  # before the (slow) loading, so an unwritable destination fails at once
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot write into {parent}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; an export gets the umask's permissions
        loaded = load_source(source)
        if isinstance(loaded, PipelineParts):
            export_unet(loaded.unet, tmp / UNET_FILE, opset)
            export_autoencoder(loaded.vae, tmp, opset)
            graphs = [UNET_FILE, VAE_ENCODER_FILE, VAE_DECODER_FILE]
        else:
            export_unet(loaded, tmp / UNET_FILE, opset)
            graphs = [UNET_FILE]
        for name in graphs:
            convert_precision(tmp / name, dtype, quantize)
        if isinstance(loaded, PipelineParts):
            manifest = build_manifest(loaded, dtype, quantize, opset)
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = [out / name for name in graphs]
    written += [out / external_data_name(name) for name in graphs if (out / external_data_name(name)).is_file()]
    if isinstance(loaded, PipelineParts):
        written.append(out / MANIFEST_FILE)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose a new output folder")
    if out.is_dir() and any(out.iterdir()):
        if not holds_export(out):
            raise InputError(f"{out} is a folder that already holds other files; choose a new or empty output folder")
        if not overwrite:
            raise InputError(f"{out} already holds an ONNX export; pass --overwrite to replace it")
    probe = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not probe.is_dir():
        raise InputError(f"cannot write {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {probe}: permission denied")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an earlier export there is removed only once the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "export")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
