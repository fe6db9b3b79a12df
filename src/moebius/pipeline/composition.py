"""The torch-free half of an inpainting call: inputs to tiles, and tiles back to finished images.

Shared by :class:`~moebius.pipeline.pipeline.MoebiusInpaintPipeline` (PyTorch) and
:class:`~moebius.onnx.pipeline.OnnxInpaintPipeline` (ONNX Runtime), which differ only in how a group of
equal-size tiles is sampled. A call runs: :func:`decode_inputs` (decode, threshold, invert, dilate the
masks) -> :func:`plan_jobs` (cut each image into model-sized tiles, :mod:`hd`; the official preset squashes
to 512²) -> per group of equal-size tiles: :func:`start_pixels`, :func:`to_model_range`, the sampler,
:func:`to_uint8` -> :func:`finish` (paste the generated pixels back, :mod:`blend`, and record metadata).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..errors import InputError
from . import blend, hd, masks
from .image_io import ImageData, mask_from_alpha, match_mask_size, to_image_data, to_mask_array
from .output import InpaintMetadata
from .prefill import classical_fill
from .presets import InpaintPreset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepInfo:
    """What a step callback sees: 0-based ``step`` of ``num_steps``, the timestep, the latents after the
    step (B, 4, h, w) float32 (a torch tensor, or a numpy array from the ONNX pipeline), and the index of the
    tile group being sampled."""

    step: int
    num_steps: int
    timestep: int
    latents: Any
    group: int


# May return latents to continue from instead of ``info.latents``; None keeps them.
StepCallback = Callable[[StepInfo], Any]
# diffusers' step hook: (pipe, step, timestep, callback_kwargs) -> callback_kwargs, whose "latents" are continued
# from; callback_kwargs also holds "step_info", a StepInfo.
StepEndCallback = Callable[[Any, int, int, dict[str, Any]], "dict[str, Any] | None"]


@dataclass
class Item:
    """One input image after decoding: pixels, the final hole map (H, W) bool, and where its mask came from."""

    data: ImageData
    hole: np.ndarray
    mask_from_alpha: bool


@dataclass
class Job:
    """One tile to inpaint: which image, which region of it, and the tile itself."""

    item: int
    region: hd.Region
    tile: hd.Tile


def as_list(value: Any) -> list[Any]:
    """A list of inputs: lists and tuples as they are, a 4-D array or tensor of several images split by row."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if getattr(value, "ndim", 0) == 4 and value.shape[0] > 1:
        return list(value)
    return [value]


def decode_inputs(image: Any, mask_image: Any, settings: InpaintPreset) -> list[Item]:
    """Decode the images and masks of a call (one mask for all, one per image, or None: each alpha channel)."""
    image_list = as_list(image)
    if not image_list:
        raise InputError("no images given")
    mask_list = [None] * len(image_list) if mask_image is None else as_list(mask_image)
    if len(mask_list) == 1 and len(image_list) > 1:
        mask_list = mask_list * len(image_list)
    if len(mask_list) != len(image_list):
        raise InputError(f"got {len(mask_list)} masks for {len(image_list)} images")
    items = []
    for i, (img, msk) in enumerate(zip(image_list, mask_list)):
        label = f"image {i}" if len(image_list) > 1 else "image"
        data = to_image_data(img, label)
        if msk is None:
            soft = mask_from_alpha(data, label)
        else:
            soft = to_mask_array(msk, label.replace("image", "mask"))
            soft = match_mask_size(soft, data.size, settings.resize_mask, label.replace("image", "mask"))
        hole = masks.binarize(soft, settings.mask_threshold, settings.invert_mask)
        hole = masks.dilate(hole, settings.mask_dilate)
        coverage = float(hole.mean())
        if coverage > 0.95 or 0 < coverage < 1e-4:
            logger.warning("%s: the mask covers %.3g%% of the image", label, 100 * coverage)
        items.append(Item(data, hole, msk is None))
    return items


def plan_jobs(items: list[Item], settings: InpaintPreset, factor: int, latent_channels: int, size_multiple: int,
              register: Callable[[int, int, tuple[int, int, int]], None]) -> tuple[list[Job], list[str]]:
    """Cut every image into tiles -> (jobs, each image's strategy). ``register(job, image, latent_shape)``
    is called for each tile in order (the noise source draws per-image noise then)."""
    jobs, strategies = [], []
    for index, item in enumerate(items):
        if not item.hole.any():
            strategies.append("none")
            continue
        if settings.size_rule == "official":
            strategy, tiles = "official", [official_tile(item, settings.native_size)]
        else:
            strategy, regions = hd.plan_regions(
                item.hole, settings.hd_strategy, crop_trigger_size=settings.crop_trigger_size,
                crop_margin=settings.crop_margin, resize_limit=settings.resize_limit,
                native_size=settings.native_size)
            tiles = [(r, hd.extract_tile(item.data.rgb, item.hole, r, size_multiple)) for r in regions]
        strategies.append(strategy)
        for region, tile in tiles:
            latent_shape = (latent_channels, tile.rgb.shape[0] // factor, tile.rgb.shape[1] // factor)
            register(len(jobs), index, latent_shape)
            jobs.append(Job(index, region, tile))
        logger.debug("image %d: %s, %d tile(s)", index, strategy, len(tiles))
    return jobs, strategies


def group_jobs(jobs: list[Job]) -> dict[tuple[int, int], list[int]]:
    """Job indices grouped by tile size (h, w), in order: each group is one U-Net batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for j, job in enumerate(jobs):
        groups.setdefault(job.tile.rgb.shape[:2], []).append(j)
    return groups


def draws_needed(settings: InpaintPreset) -> tuple[str, ...]:
    """Names of the random tensors a run with ``settings`` consumes, in the official draw order."""
    names = []
    if settings.sample_posterior and settings.strength < 1.0:
        names.append("image_posterior")
    if settings.sample_posterior:
        names.append("masked_image_posterior")
    names.append("initial")
    if settings.noise_offset > 0:
        names.append("offset")
    return tuple(names)


def start_pixels(tile: hd.Tile, settings: InpaintPreset) -> np.ndarray:
    """The tile the sampler encodes: as given, or with its hole pre-filled (``settings.prefill``)."""
    if settings.prefill == "none":
        return tile.rgb
    return classical_fill(tile.rgb, tile.hole, settings.prefill)


def to_model_range(rgb: np.ndarray) -> np.ndarray:
    """uint8 (B, h, w, 3) -> float32 (B, 3, h, w) in [-1, 1]: uint8/255*2-1 in float64, then float32, the
    official preprocessing's exact values."""
    return np.ascontiguousarray((rgb.astype(np.float64) / 255 * 2 - 1).astype(np.float32).transpose(0, 3, 1, 2))


def to_uint8(decoded: np.ndarray, quantize: str) -> np.ndarray:
    """Decoded float32 (B, 3, h, w) in ~[0, 1] -> uint8 (B, h, w, 3), rounded (half to even) or truncated."""
    pixels = np.clip(decoded, 0, 1) * np.float32(255)
    pixels = np.round(pixels) if quantize == "round" else pixels
    return np.ascontiguousarray(pixels.astype(np.uint8).transpose(0, 2, 3, 1))


def finish(items: list[Item], jobs: list[Job], generated: list[np.ndarray], settings: InpaintPreset,
           seeds: list[int], strategies: list[str], steps_run: int,
           variant: str | None) -> list[tuple[np.ndarray, np.ndarray | None, InpaintMetadata]]:
    """Paste each image's generated tiles back -> (rgb (H, W, 3) uint8, alpha (H, W) uint8 or None,
    metadata) per image."""
    out = []
    for index, item in enumerate(items):
        mine = [(job, generated[j]) for j, job in enumerate(jobs) if job.item == index]
        rgb, alpha = compose(item, mine, settings)
        out.append((rgb, alpha, InpaintMetadata(
            preset=settings.name, seed=seeds[index], num_inference_steps=settings.num_inference_steps,
            steps_run=steps_run, scheduler=settings.scheduler, guidance_scale=settings.guidance_scale,
            strength=settings.strength,
            size=(rgb.shape[1], rgb.shape[0]), hd_strategy=strategies[index],
            regions=tuple(job.region.box for job, _ in mine),
            work_sizes=tuple(job.region.size for job, _ in mine), skipped=not mine,
            variant=variant, settings=settings.to_dict())))
    return out


def compose(item: Item, jobs: list[tuple[Job, np.ndarray]],
            settings: InpaintPreset) -> tuple[np.ndarray, np.ndarray | None]:
    """Paste each tile's pixels into the image -> (rgb (H, W, 3) uint8, alpha (H, W) uint8 or None)."""
    data = item.data
    if not jobs:  # empty mask: the input, unchanged
        return data.rgb.copy(), None if data.alpha is None else data.alpha.copy()
    if settings.size_rule == "official":
        (job, generated), = jobs
        return paste(generated, job.tile.rgb, job.tile.hole, settings), None  # official output: 512² RGB
    out = data.rgb.copy()
    feather = masks.feather_alpha(item.hole, settings.mask_blur) if settings.paste == "keep_unmasked" else None
    for job, generated in jobs:
        x0, y0, x1, y1 = job.region.box
        pixels = hd.restore_tile(generated, job.tile, job.region)
        box_alpha = None if feather is None else feather[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = paste(pixels, data.rgb[y0:y1, x0:x1], item.hole[y0:y1, x0:x1], settings, box_alpha)
    alpha = data.alpha
    if alpha is not None and item.mask_from_alpha:
        # The mask was the transparency: what was filled becomes opaque.
        filled = feather if feather is not None else np.where(item.hole, 255, 0).astype(np.uint8)
        alpha = np.maximum(alpha, filled)
    return out, None if alpha is None else alpha.copy()


def official_tile(item: Item, size: int) -> tuple[hd.Region, hd.Tile]:
    """The official loader's geometry: image bicubic and mask nearest to size² (a no-op at 512²).

    The pipeline's own short-side-to-512, floor-to-64 Lanczos resize that follows is then the identity.
    """
    rgb = item.data.rgb
    height, width = item.hole.shape
    if (width, height) != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))
    hole = np.asarray(Image.fromarray(np.where(item.hole, 255, 0).astype(np.uint8)).resize((size, size), Image.NEAREST)) > 127
    return hd.Region((0, 0, width, height), (size, size)), hd.Tile(rgb, hole, (size, size))


def paste(generated: np.ndarray, original: np.ndarray, hole: np.ndarray, settings: InpaintPreset,
          alpha: np.ndarray | None = None) -> np.ndarray:
    """Blend generated pixels over the original by ``settings.paste`` (all arrays share (H, W))."""
    if settings.paste == "official":
        return blend.paste_official(generated, original, hole, settings.compensate)[0]
    if settings.compensate:
        generated = blend.shift_colour(generated, original, hole)
    if settings.paste == "none":
        return generated.copy()
    if alpha is None:
        alpha = masks.feather_alpha(hole, settings.mask_blur)
    return blend.paste_keep_unmasked(generated, original, alpha)


def convert_output(rgb: np.ndarray, alpha: np.ndarray | None, output_type: str,
                   source: ImageData | None = None) -> Any:
    """A finished image as ``"pil"`` or ``"np"`` (uint8 (H, W, 3 or 4)); a PIL image carries ``source``'s EXIF
    and colour profile."""
    array = rgb if alpha is None else np.concatenate([rgb, alpha[:, :, None]], axis=2)
    if output_type == "np":
        return array
    image = Image.fromarray(array, "RGB" if alpha is None else "RGBA")
    # The input's EXIF (orientation already applied) and colour profile travel with the result, as in the
    # CLI's and the server's files: getexif() reads them, and PNG/WebP saves keep the profile by default.
    if source is not None and source.exif:
        image.info["exif"] = source.exif
    if source is not None and source.icc_profile:
        image.info["icc_profile"] = source.icc_profile
    return image
