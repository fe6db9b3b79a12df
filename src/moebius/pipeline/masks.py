"""Mask operations: threshold, invert, dilate, feather, and resampling to latent or working size.

Masks here are boolean hole maps (H, W) (True = fill) or uint8 weights (H, W) in 0..255. Work is done
only inside the hole's bounding box plus the reach of the operation, so a small mask on a 12 MP photo
costs what a small image costs.
"""

from __future__ import annotations

import math

import numpy as np
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
    grown = hole[y0:y1, x0:x1]
    for i in range(radius):
        across, down = _grow_1px(grown, axis=1), _grow_1px(grown, axis=0)
        # square: both directions in turn; plus shape: either direction alone
        grown = _grow_1px(across, axis=0) if i % 2 == 0 else across | down
    out = hole.copy()
    out[y0:y1, x0:x1] = grown
    return out


def _grow_1px(hole: np.ndarray, axis: int) -> np.ndarray:
    """A 3-tap max filter of a bool map along ``axis`` (the map's border counts as not-hole)."""
    out = hole.copy()
    if axis == 0:
        out[1:] |= hole[:-1]
        out[:-1] |= hole[1:]
    else:
        out[:, 1:] |= hole[:, :-1]
        out[:, :-1] |= hole[:, 1:]
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
    if width <= hole.shape[1] and height <= hole.shape[0]:
        return _any_pool(_any_pool(hole, height, axis=0), width, axis=1)
    rows = _nearest_index(hole.shape[0], height)
    cols = _nearest_index(hole.shape[1], width)
    return hole[rows][:, cols]


def _any_pool(hole: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Adaptive max-pooling of a bool map along ``axis`` to ``size`` cells: cell i covers source pixels
    floor(i·n/size) to ceil((i+1)·n/size), as in torch's ``adaptive_max_pool2d``."""
    n = hole.shape[axis]
    i = np.arange(size)
    starts, ends = (i * n) // size, -((-(i + 1) * n) // size)
    counts = np.concatenate([np.zeros_like(hole.take([0], axis=axis), dtype=np.int64),
                             np.cumsum(hole, axis=axis, dtype=np.int64)], axis=axis)
    return (counts.take(ends, axis=axis) - counts.take(starts, axis=axis)) > 0


def _nearest_index(n: int, size: int) -> np.ndarray:
    """Source indices of nearest-neighbour resampling from n to size, as torch's ``mode="nearest"``
    computes them (a float32 scale n/size)."""
    scale = np.float32(n) / np.float32(size)
    return np.minimum(np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64), n - 1)


def latent_mask(mask: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """Pixel hole mask (B, 1, H, W) {0, 1} float32, H and W multiples of f -> latent mask (B, 1, H/f, W/f).

    ``nearest`` is the official rule (``F.interpolate`` default: the top-left pixel of each f×f cell, so a
    stroke thinner than f px can vanish); ``max`` marks a cell as hole if any of its pixels is.
    """
    mask = np.asarray(mask)
    b, c, h, w = mask.shape
    if mode == "nearest":
        return np.ascontiguousarray(mask[:, :, ::factor, ::factor])
    return mask.reshape(b, c, h // factor, factor, w // factor, factor).max(axis=(3, 5))
