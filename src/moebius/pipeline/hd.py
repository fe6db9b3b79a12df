"""High-resolution and odd-shaped inputs: which part of the image the model sees, and at what scale.

The student was trained at 512². Three strategies (IOPaint's names and defaults):

* ``original``: the whole image at its own size (padded to the model's size multiple).
* ``resize``: the whole image, downscaled so the long side is at most ``resize_limit``.
* ``crop`` (default): above ``crop_trigger_size``, one crop per group of mask components, each grown by
  ``crop_margin`` of context and to at least the model's native size where the image allows, then
  downscaled (never upscaled) so its short side is at most ``native_size``. Boxes that overlap are merged.
  A small mask on a 4000×3000 photo therefore costs what one 512² image costs.

A :class:`Region` says which box is cut out and the size it is processed at; :func:`extract_tile` and
:func:`restore_tile` do the cutting, resizing and padding, and their inverse.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .masks import downsample_any

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; end-exclusive, image pixels

# Mask components are found on a grid of this many pixels per cell: boxes get a margin of ~128 px and
# are merged when they overlap, so finer detail would not change the crops.
_COMPONENT_CELL = 8


@dataclass(frozen=True)
class Region:
    """A box of the image and the (width, height) it is resized to before inference."""

    box: Box
    size: tuple[int, int]

    @property
    def box_size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


def plan_regions(hole: np.ndarray, strategy: str, *, crop_trigger_size: int, crop_margin: int,
                 resize_limit: int, native_size: int) -> tuple[str, list[Region]]:
    """Regions to inpaint for a (H, W) bool hole map -> (strategy actually used, regions)."""
    height, width = hole.shape
    full: Box = (0, 0, width, height)
    if strategy == "resize":
        scale = min(1.0, resize_limit / max(width, height))
        return "resize", [Region(full, _scaled((width, height), scale))]
    if strategy == "crop" and max(width, height) > crop_trigger_size:
        boxes = crop_boxes(hole, crop_margin, native_size)
        regions = []
        for box in boxes:
            bw, bh = box[2] - box[0], box[3] - box[1]
            regions.append(Region(box, _scaled((bw, bh), min(1.0, native_size / min(bw, bh)))))
        return "crop", regions
    return "original", [Region(full, (width, height))]


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def component_boxes(hole: np.ndarray, cell: int = _COMPONENT_CELL) -> list[Box]:
    """Bounding boxes (to ``cell`` px) of the 8-connected components of a (H, W) bool map, in raster order."""
    height, width = hole.shape
    gh, gw = -(-height // cell), -(-width // cell)
    padded = np.zeros((gh * cell, gw * cell), bool)
    padded[:height, :width] = hole
    grid = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))  # (gh, gw): does the cell hold a hole pixel
    seen = np.zeros_like(grid)
    boxes = []
    for start in zip(*(idx.tolist() for idx in np.nonzero(grid))):
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        r0, c0, r1, c1 = start[0], start[1], start[0], start[1]
        while queue:  # breadth-first flood fill over set cells
            r, c = queue.popleft()
            r0, r1, c0, c1 = min(r0, r), max(r1, r), min(c0, c), max(c1, c)
            for nr in (r - 1, r, r + 1):
                for nc in (c - 1, c, c + 1):
                    if 0 <= nr < gh and 0 <= nc < gw and grid[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        queue.append((nr, nc))
        boxes.append((c0 * cell, r0 * cell, min((c1 + 1) * cell, width), min((r1 + 1) * cell, height)))
    return boxes


def _grow_to(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) symmetrically to at least ``size`` within [0, limit), shifting inward at the edges."""
    size = min(size, limit)
    extra = size - (hi - lo)
    if extra <= 0:
        return lo, hi
    lo -= extra // 2
    hi = lo + size
    if lo < 0:
        lo, hi = 0, size
    if hi > limit:
        lo, hi = limit - size, limit
    return lo, hi


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def crop_boxes(hole: np.ndarray, margin: int, min_size: int) -> list[Box]:
    """One box per group of mask components: component box + ``margin``, grown to ``min_size`` per side
    (within the image), overlapping boxes merged. Boxes are disjoint and cover every hole pixel."""
    height, width = hole.shape
    boxes = []
    for x0, y0, x1, y1 in component_boxes(hole):
        x0, x1 = _grow_to(max(x0 - margin, 0), min(x1 + margin, width), min_size, width)
        y0, y1 = _grow_to(max(y0 - margin, 0), min(y1 + margin, height), min_size, height)
        boxes.append((x0, y0, x1, y1))
    merged = True
    while merged:  # union overlapping boxes until none overlap
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _overlap(boxes[i], boxes[j]):
                    a, b = boxes[i], boxes.pop(j)
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: (b[1], b[0]))


# ----------------------------------------------------------------------------------------------------
# Tiles: the model-sized pieces cut from the image, and their way back


@dataclass
class Tile:
    """A region resized to its working size and padded to a size multiple.

    rgb: (h, w, 3) uint8; hole: (h, w) bool; ``content`` = (width, height) before padding.
    """

    rgb: np.ndarray
    hole: np.ndarray
    content: tuple[int, int]


def extract_tile(rgb: np.ndarray, hole: np.ndarray, region: Region, multiple: int) -> Tile:
    """Cut ``region`` from the image, resize it (Lanczos; the hole so that no hole pixel is lost), and
    pad to a multiple of ``multiple`` px by mirroring (the padding is known context, never hole)."""
    x0, y0, x1, y1 = region.box
    crop, crop_hole = rgb[y0:y1, x0:x1], hole[y0:y1, x0:x1]
    if region.size != region.box_size:
        crop = np.asarray(Image.fromarray(crop).resize(region.size, Image.LANCZOS))
        crop_hole = downsample_any(crop_hole, region.size)
    width, height = region.size
    pad_w, pad_h = -width % multiple, -height % multiple
    if pad_w or pad_h:
        crop = np.pad(crop, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
        crop_hole = np.pad(crop_hole, ((0, pad_h), (0, pad_w)), mode="constant")
    return Tile(np.ascontiguousarray(crop), np.ascontiguousarray(crop_hole), (width, height))


def restore_tile(generated: np.ndarray, tile: Tile, region: Region) -> np.ndarray:
    """Inverse of :func:`extract_tile` for the model's output: (h, w, 3) uint8 -> the box's (bh, bw, 3)."""
    width, height = tile.content
    out = generated[:height, :width]
    if region.size != region.box_size:
        out = np.asarray(Image.fromarray(np.ascontiguousarray(out)).resize(region.box_size, Image.LANCZOS))
    return out
