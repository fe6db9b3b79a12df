"""Where evaluation masks come from: a folder of files, or a seeded generator of our own.

A *mask source* is any callable ``(name, (width, height)) -> PIL "L" image`` (255 = hole) with a
``description`` attribute for reports. Two are here:

* :class:`FolderMasks`: ``<folder>/<name>.png`` (or ``<name>_mask.png``, any image suffix), checked for size.
* :class:`GeneratedMasks`: free-form brush strokes plus rectangles drawn until the hole covers a target
  fraction of the image drawn from the preset's range. The mask of an image depends only on
  ``(seed, name)``, never on the order or number of images. It is drawn on a canvas whose short side is
  512 px and resized (nearest) to the image, so the 256² mask of a photo is its 512² mask scaled down. This is *not* LaMa's, MAT's or
  CoModGAN's generator; a benchmark that needs those uses their published mask files.

* :class:`LamaMasks`: the LaMa-style presets training draws from (``thin_256`` ... ``thick_512``,
  :mod:`moebius.mask_generators`), seeded by ``(seed, name)`` the same way.

:func:`mask_source` picks one from a preset name. Any other callable with the same signature plugs in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from ..image_files import IMAGE_SUFFIXES

CANONICAL_SIDE = 512

# Hole-area ranges (fraction of the image) of the generator presets.
PRESETS: dict[str, tuple[float, float]] = {
    "mixed": (0.02, 0.62),   # spreads over LaMa's first six area bins; the photo benchmark's default
    "small": (0.05, 0.30),
    "large": (0.30, 0.60),
    "40-50": (0.40, 0.50),   # the Places2 Test protocol's stated area (PixelHacker README)
}


class MaskSource(Protocol):
    """``(name, (width, height)) -> L image`` with 255 marking the hole."""

    description: str

    def __call__(self, name: str, size: tuple[int, int]) -> Image.Image: ...


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """The file ``<stem><suffix>`` or ``<stem>_mask<suffix>`` in ``folder`` (first image suffix that exists)."""
    for base in (stem, f"{stem}_mask"):
        for suffix in IMAGE_SUFFIXES:
            p = folder / f"{base}{suffix}"
            if p.is_file():
                return p
    return None


@dataclass
class FolderMasks:
    """Mask files paired with images by name; a missing or wrongly sized mask is an error."""

    folder: Path

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.folder.is_dir():
            raise InputError(f"mask folder not found: {self.folder}")
        self.description = f"files in {self.folder}"

    def __call__(self, name: str, size: tuple[int, int]) -> Image.Image:
        path = find_by_stem(self.folder, name)
        if path is None:
            raise InputError(f"no mask for {name!r} in {self.folder} (looked for {name}.png, {name}_mask.png, ...)")
        mask = Image.open(path)
        mask.load()
        if mask.size != size:
            raise InputError(f"mask {path.name} is {mask.size[0]}x{mask.size[1]}, its image {size[0]}x{size[1]}")
        return mask.convert("L")


@dataclass
class GeneratedMasks:
    """Seeded free-form masks; ``preset`` names a hole-area range in :data:`PRESETS`."""

    preset: str = "mixed"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"unknown mask preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        lo, hi = PRESETS[self.preset]
        self.description = f"moebius.eval.masks generator, preset {self.preset} (area {lo:.2f}-{hi:.2f}), seed {self.seed}"

    def __call__(self, name: str, size: tuple[int, int]) -> Image.Image:
        rng = _name_rng(self.seed, name)
        k = CANONICAL_SIDE / min(size)
        canvas = (max(1, round(size[0] * k)), max(1, round(size[1] * k)))
        mask = draw_mask(rng, canvas, PRESETS[self.preset])
        return mask if canvas == tuple(size) else mask.resize(size, Image.NEAREST)


def _name_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on ``(seed, name)``."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class LamaMasks:
    """LaMa-style strokes-or-boxes masks from :mod:`moebius.mask_generators` (its presets scale with image size)."""

    preset: str = "thick_512"
    seed: int = 0

    def __post_init__(self) -> None:
        from ..mask_generators import PRESETS as TRAIN_PRESETS

        if self.preset not in TRAIN_PRESETS:
            raise InputError(f"unknown LaMa mask preset {self.preset!r}; choose from {', '.join(TRAIN_PRESETS)}")
        self.description = f"moebius.mask_generators LaMa-style preset {self.preset}, seed {self.seed}"

    def __call__(self, name: str, size: tuple[int, int]) -> Image.Image:
        from ..mask_generators import MaskGenerator

        hole = MaskGenerator(self.preset)(size[1], size[0], _name_rng(self.seed, name))  # (H, W) float, 1 = hole
        return Image.fromarray(np.where(hole > 0.5, 255, 0).astype(np.uint8))


def mask_source(preset: str, seed: int = 0) -> MaskSource:
    """``mixed``/``small``/``large``/``40-50`` -> :class:`GeneratedMasks`; a LaMa preset name -> :class:`LamaMasks`."""
    if preset in PRESETS:
        return GeneratedMasks(preset, seed)
    from ..mask_generators import PRESETS as TRAIN_PRESETS

    if preset in TRAIN_PRESETS:
        return LamaMasks(preset, seed)
    raise InputError(f"unknown mask preset {preset!r}; choose from {', '.join([*PRESETS, *TRAIN_PRESETS])}")


def _stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, scale: float) -> None:
    """One brush stroke: a polyline of 2-8 segments with round joints, width 2-9% of the short side."""
    width = max(1, int(round(scale * rng.uniform(0.02, 0.09))))
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    angle = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(2, 9))):
        angle += rng.uniform(-math.pi / 2, math.pi / 2)
        length = scale * rng.uniform(0.05, 0.25)
        x = float(np.clip(x + length * math.cos(angle), 0, w - 1))
        y = float(np.clip(y + length * math.sin(angle), 0, h - 1))
        points.append((x, y))
    draw.line(points, fill=255, width=width)
    r = width / 2
    for px, py in points:
        draw.ellipse((px - r, py - r, px + r, py + r), fill=255)


def _box(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """One axis-aligned rectangle, 10-45% of each side."""
    bw, bh = w * rng.uniform(0.10, 0.45), h * rng.uniform(0.10, 0.45)
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    draw.rectangle((x0, y0, x0 + bw, y0 + bh), fill=255)


def draw_mask(rng: np.random.Generator, size: tuple[int, int], area: tuple[float, float]) -> Image.Image:
    """Add strokes (3 in 4) and boxes (1 in 4) until the hole reaches a target drawn from ``area``.

    A shape that would push the hole past the range's top is undone (up to 20 times per mask), so the
    result lands in ``[target, hi]`` except when the shapes keep overshooting, where it stays below target.
    Randomness: only ``rng``.
    """
    w, h = size
    lo, hi = area
    target = rng.uniform(lo, hi)
    mask = Image.new("L", (w, h), 0)
    scale = min(w, h)
    misses = 0
    while misses < 20:
        trial = mask.copy()
        draw = ImageDraw.Draw(trial)
        if rng.random() < 0.25:
            _box(draw, rng, w, h)
        else:
            _stroke(draw, rng, w, h, scale)
        ratio = float(np.count_nonzero(np.asarray(trial))) / (w * h)
        if ratio > hi:
            misses += 1
            continue
        mask = trial
        if ratio >= target:
            break
    return mask
