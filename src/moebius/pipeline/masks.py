"""Mask operations: threshold, invert, dilate, feather, and resampling to latent or working size.

Masks here are boolean hole maps (H, W) (True = fill) or uint8 weights (H, W) in 0..255. Work is done
only inside the hole's bounding box plus the reach of the operation, so a small mask on a 12 MP photo
costs what a small image costs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter


def binarize(mask: np.ndarray, threshold: float = 127.5, invert: bool = False) -> np.ndarray:
    """Soft (H, W) uint8 mask -> bool hole map: value >= threshold is a hole (official: < 127.5 keeps)."""
    hole = mask >= threshold
    return ~hole if invert else hole


def bounding_box(hole: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end-exclusive, of the True pixels of a (H, W) map; None when there are none."""
    rows = np.flatnonzero(hole.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(hole.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _grow_box(box: tuple[int, int, int, int], pad: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, shape[1]), min(y1 + pad, shape[0])


def dilate(hole: np.ndarray, radius: int) -> np.ndarray:
    """Grow a (H, W) bool hole by ``radius`` px with an octagonal (near-disc) structuring element.

    Alternating 3x3 square and plus-shaped max filters approximate a disc far better than one square
    kernel, and each pass is a cheap separable max-pool.
    """
    box = bounding_box(hole)
    if radius <= 0 or box is None:
        return hole.copy()
    x0, y0, x1, y1 = _grow_box(box, radius + 1, hole.shape)
    t = torch.from_numpy(np.ascontiguousarray(hole[y0:y1, x0:x1])).to(torch.float32)[None, None]  # (1, 1, h, w)
    for i in range(radius):
        if i % 2 == 0:
            t = F.max_pool2d(t, 3, stride=1, padding=1)
        else:  # plus shape: max of a horizontal and a vertical 3-tap filter
            t = torch.maximum(F.max_pool2d(t, (1, 3), stride=1, padding=(0, 1)),
                              F.max_pool2d(t, (3, 1), stride=1, padding=(1, 0)))
    out = hole.copy()
    out[y0:y1, x0:x1] = t[0, 0].numpy() > 0
    return out


def gaussian_blur_u8(mask: np.ndarray, radius: float) -> np.ndarray:
    """PIL ``GaussianBlur(radius)`` of a (H, W) uint8 map (the official paste weight uses radius 3)."""
    return np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(radius)))


def feather_alpha(hole: np.ndarray, radius: float) -> np.ndarray:
    """Paste weight that keeps the hole fully generated and fades out over a thin band outside it.

    alpha = max(255·hole, GaussianBlur(255·hole, radius)), uint8 (H, W). It is exactly 0 beyond the
    blur's reach (a few radii), so those pixels stay byte-identical to the input.
    """
    alpha = np.where(hole, 255, 0).astype(np.uint8)
    box = bounding_box(hole)
    if radius <= 0 or box is None:
        return alpha
    # PIL's Gaussian is three box passes; its reach is below 3·radius + 3 px.
    x0, y0, x1, y1 = _grow_box(box, int(math.ceil(4 * radius)) + 4, hole.shape)
    crop = alpha[y0:y1, x0:x1]
    alpha[y0:y1, x0:x1] = np.maximum(crop, gaussian_blur_u8(crop, radius))
    return alpha


def downsample_any(hole: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a (H, W) bool hole to ``size`` = (width, height) so that no hole pixel is lost.

    Shrinking marks an output pixel as hole if any source pixel under it is (adaptive max-pool);
    enlarging uses nearest neighbour.
    """
    width, height = size
    if (width, height) == (hole.shape[1], hole.shape[0]):
        return hole.copy()
    t = torch.from_numpy(np.ascontiguousarray(hole)).to(torch.float32)[None, None]  # (1, 1, H, W)
    if width <= hole.shape[1] and height <= hole.shape[0]:
        t = F.adaptive_max_pool2d(t, (height, width))
    else:
        t = F.interpolate(t, size=(height, width), mode="nearest")
    return t[0, 0].numpy() > 0


def latent_mask(mask: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    """Pixel hole mask (B, 1, H, W) {0, 1} -> latent mask (B, 1, H/f, W/f).

    ``nearest`` is the official rule (``F.interpolate`` default: the top-left pixel of each f×f cell, so a
    stroke thinner than f px can vanish); ``max`` marks a cell as hole if any of its pixels is.
    """
    height, width = mask.shape[-2] // factor, mask.shape[-1] // factor
    if mode == "nearest":
        return F.interpolate(mask, size=(height, width), mode="nearest")
    return F.max_pool2d(mask, factor)
