"""Putting the generated pixels back: the official feathered paste, colour compensation, and our
keep-unmasked blend.

Official: the weight m = GaussianBlur(radius 3) of the binary mask / 255
is applied over the whole image, so pixels just outside the hole change too, and floats are truncated to
uint8. The arithmetic below follows the reference's order in float64; it reproduces the recorded
``output_paste`` and ``output_compensate`` bit for bit from the recorded decode.

Ours (``keep_unmasked``): alpha = max(hole, blurred hole) in integers, so every pixel outside the hole's
thin feather band is byte-identical to the input, and the hole is fully generated.
"""

from __future__ import annotations

import numpy as np

from .masks import bounding_box, gaussian_blur_u8

OFFICIAL_PASTE_RADIUS = 3
COMPENSATE_FACTOR = 1.1
# The official neighbourhood is the hole's bounding box grown by 10 px in total.
_COMPENSATE_GROW = 10


def official_paste_weight(hole: np.ndarray) -> np.ndarray:
    """m = GaussianBlur(radius 3) of the 0/255 mask, / 255, float64 (H, W, 1)."""
    blurred = gaussian_blur_u8(np.where(hole, 255, 0).astype(np.uint8), OFFICIAL_PASTE_RADIUS)
    return (blurred.astype(np.float64) / 255.0)[:, :, None]


def compensate_region(hole: np.ndarray) -> np.ndarray:
    """Official colour-statistics region: the hole's bounding box grown by 10 px around its centre, minus
    the hole. (H, W) bool; empty when the hole is.

    Inclusive bounds: centre = (min + max) // 2 and half-size = ceil((max - min + 10) / 2) on each axis,
    clipped to the image; this reproduces the official region on the trace mask exactly.
    """
    region = np.zeros_like(hole)
    box = bounding_box(hole)
    if box is None:
        return region
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1  # inclusive
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    hx, hy = -(-(x1 - x0 + _COMPENSATE_GROW) // 2), -(-(y1 - y0 + _COMPENSATE_GROW) // 2)
    region[max(cy - hy, 0): cy + hy + 1, max(cx - hx, 0): cx + hx + 1] = True
    return region & ~hole


def colour_delta(generated: np.ndarray, original: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """mean(original) - mean(generated) per channel over :func:`compensate_region`, float64 (3,), 0-255 scale.

    Zero when the region is empty (a hole covering the whole image has no surroundings to match).
    """
    region = compensate_region(hole)
    if not region.any():
        return np.zeros(generated.shape[2], np.float64)
    return original[region].astype(np.float64).mean(0) - generated[region].astype(np.float64).mean(0)


def paste_official(generated: np.ndarray, original: np.ndarray, hole: np.ndarray,
                   compensate: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Official paste-back (and ``compensate``). uint8 (H, W, 3) x2 + bool (H, W) -> (uint8 (H, W, 3), delta).

    out = trunc(clip((gen/255 + 1.1·δ/255)·m + orig/255·(1 − m), 0, 1)·255), δ = 0 without compensation.
    """
    m = official_paste_weight(hole)
    gen01 = generated / 255.0
    delta = None
    if compensate:
        delta = colour_delta(generated, original, hole)
        gen01 = gen01 + COMPENSATE_FACTOR * delta / 255.0
    out = np.clip(gen01 * m + original / 255.0 * (1.0 - m), 0.0, 1.0) * 255.0
    return out.astype(np.uint8), delta


def paste_keep_unmasked(generated: np.ndarray, original: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Integer blend round((gen·a + orig·(255 − a)) / 255): exact at a = 0 (input kept) and a = 255.

    generated, original: uint8 (H, W, C); alpha: uint8 (H, W). -> uint8 (H, W, C).
    """
    a = alpha.astype(np.int32)[:, :, None]
    out = (generated.astype(np.int32) * a + original.astype(np.int32) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def shift_colour(generated: np.ndarray, original: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Compensation for the keep-unmasked paste: gen + 1.1·δ, rounded and clipped. uint8 (H, W, 3)."""
    delta = colour_delta(generated, original, hole)
    return np.clip(np.rint(generated + COMPENSATE_FACTOR * delta), 0, 255).astype(np.uint8)
