"""Training masks: LaMa-style random strokes and boxes, object-shaped masks from folders, dilation.

Each call of a :class:`MaskGenerator` picks *one* kind (strokes or boxes,
with probabilities proportional to the preset's weights) and draws it with the caller's
``numpy.random.Generator``, so a mask is a pure function of the seed. Counts follow the official
generator's integer ranges (upper bounds exclusive, so up to ``max_times + 1`` strokes). Strokes are
capsules (round caps) drawn in NumPy; OpenCV is not needed.

The thin presets work here: the official YAMLs carry a ``variants_n`` key its generator does not accept,
so they crash as shipped.

Masks are float32 (H, W) arrays, 1 = hole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError
from .image_files import list_image_files


@dataclass(frozen=True)
class StrokeSpec:
    """Random polylines: ``min_times..max_times(+1)`` strokes of 1-5 segments each."""

    weight: float
    min_times: int
    max_times: int
    max_width: int  # widths 5 .. 5 + max_width - 1
    max_angle: int  # angles 0.01 + {0 .. max_angle - 1} rad
    max_len: int  # lengths 10 .. 10 + max_len - 1


@dataclass(frozen=True)
class BoxSpec:
    """Random axis-aligned rectangles, sides ``min_size..max_size``, kept ``margin`` px from the border."""

    weight: float
    min_times: int
    max_times: int
    min_size: int
    max_size: int
    margin: int


@dataclass(frozen=True)
class MaskPreset:
    """A named mixture of strokes and boxes, tuned for one training resolution."""

    resolution: int
    strokes: StrokeSpec | None
    boxes: BoxSpec | None


# The official presets (LaMa's random_{thin,medium,thick}_{256,512}).
PRESETS: dict[str, MaskPreset] = {
    "thin_256": MaskPreset(256, StrokeSpec(1.0, 4, 50, 10, 4, 40), None),
    "thin_512": MaskPreset(512, StrokeSpec(1.0, 4, 70, 20, 4, 100), None),
    "medium_256": MaskPreset(256, StrokeSpec(1.0, 4, 5, 50, 4, 100), BoxSpec(0.3, 1, 5, 10, 50, 0)),
    "medium_512": MaskPreset(512, StrokeSpec(1.0, 4, 10, 100, 4, 200), BoxSpec(0.3, 1, 5, 30, 150, 0)),
    "thick_256": MaskPreset(256, StrokeSpec(1.0, 1, 5, 100, 4, 200), BoxSpec(0.3, 1, 3, 30, 150, 10)),
    "thick_512": MaskPreset(512, StrokeSpec(1.0, 1, 5, 250, 4, 450), BoxSpec(0.3, 1, 4, 30, 300, 10)),
}


def get_preset(name: str) -> MaskPreset:
    if name not in PRESETS:
        raise ConfigError(f"unknown mask preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def draw_capsule(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float) -> None:
    """Set every pixel whose centre lies within ``width / 2`` of segment p0-p1 (points as (x, y)) to 1."""
    h, w = mask.shape
    r = width / 2.0
    x0, y0 = p0
    x1, y1 = p1
    left, right = max(int(math.floor(min(x0, x1) - r)), 0), min(int(math.ceil(max(x0, x1) + r)) + 1, w)
    top, bottom = max(int(math.floor(min(y0, y1) - r)), 0), min(int(math.ceil(max(y0, y1) + r)) + 1, h)
    if left >= right or top >= bottom:
        return
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float64)
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    if length2 > 0:
        s = np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    else:
        s = np.zeros_like(xs)
    dist2 = (xs - (x0 + s * dx)) ** 2 + (ys - (y0 + s * dy)) ** 2
    mask[top:bottom, left:right][dist2 <= r * r] = 1.0


def random_strokes(spec: StrokeSpec, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Irregular brush strokes. -> (H, W) float32."""
    mask = np.zeros((height, width), np.float32)
    for stroke in range(int(rng.integers(spec.min_times, spec.max_times + 1))):
        x, y = float(rng.integers(width)), float(rng.integers(height))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + float(rng.integers(spec.max_angle))
            if stroke % 2 == 0:
                angle = 2 * math.pi - angle
            length = 10 + int(rng.integers(spec.max_len))
            brush = 5 + int(rng.integers(spec.max_width))
            nx = float(np.clip(x + length * math.sin(angle), 0, width))
            ny = float(np.clip(y + length * math.cos(angle), 0, height))
            draw_capsule(mask, (x, y), (nx, ny), brush)
            x, y = nx, ny
    return mask


def random_boxes(spec: BoxSpec, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Rectangles. -> (H, W) float32."""
    mask = np.zeros((height, width), np.float32)
    max_size = min(spec.max_size, height - 2 * spec.margin, width - 2 * spec.margin)
    min_size = min(spec.min_size, max_size)
    if max_size < 1:
        return mask
    for _ in range(int(rng.integers(spec.min_times, spec.max_times + 1))):
        bw = int(rng.integers(min_size, max_size + 1))
        bh = int(rng.integers(min_size, max_size + 1))
        x = int(rng.integers(spec.margin, width - spec.margin - bw + 1))
        y = int(rng.integers(spec.margin, height - spec.margin - bh + 1))
        mask[y:y + bh, x:x + bw] = 1.0
    return mask


class MaskGenerator:
    """Draws masks from a preset: ``generator(height, width, rng) -> (H, W) float32``.

    Sizes other than the preset's resolution scale every length (widths, lengths, box sides) by
    ``min(H, W) / preset.resolution``, so a preset keeps its hole statistics at any crop size.
    """

    def __init__(self, preset: str | MaskPreset) -> None:
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        kinds = [k for k in (self.preset.strokes, self.preset.boxes) if k is not None and k.weight > 0]
        if not kinds:
            raise ConfigError("a mask preset needs strokes or boxes with a positive weight")
        self._kinds = kinds
        total = sum(k.weight for k in kinds)
        self._probs = [k.weight / total for k in kinds]

    def __call__(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        kind = self._kinds[int(rng.choice(len(self._kinds), p=self._probs))]
        scale = min(height, width) / self.preset.resolution
        if isinstance(kind, StrokeSpec):
            if scale != 1.0:
                kind = StrokeSpec(kind.weight, kind.min_times, kind.max_times, _scaled(kind.max_width, scale),
                                  kind.max_angle, _scaled(kind.max_len, scale))
            return random_strokes(kind, height, width, rng)
        if scale != 1.0:
            kind = BoxSpec(kind.weight, kind.min_times, kind.max_times, _scaled(kind.min_size, scale),
                           _scaled(kind.max_size, scale), int(round(kind.margin * scale)))
        return random_boxes(kind, height, width, rng)


def _scaled(value: int, scale: float) -> int:
    return max(1, int(round(value * scale)))


def dilate(mask: np.ndarray, kernel: int, iterations: int = 1) -> np.ndarray:
    """Binary dilation with a ``kernel``×``kernel`` box, ``iterations`` times. (H, W) -> (H, W)."""
    out = mask > 0.5
    r = kernel // 2
    for _ in range(iterations):
        padded = np.pad(out, r)
        grown = np.zeros_like(out)
        h, w = out.shape
        for dy in range(kernel):  # a box max is separable, but kernels are at most 7 wide
            row = np.zeros_like(out)
            for dx in range(kernel):
                row |= padded[dy:dy + h, dx:dx + w]
            grown |= row
        out = grown
    return out.astype(np.float32)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, so a listing is reproducible."""
    if not Path(folder).is_dir():
        raise InputError(f"not a folder: {folder}")
    return list_image_files(folder, recursive=True)


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask image (white or opaque = hole), optionally resized (nearest) to ``size`` = (H, W)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") and image.getextrema()[-1][0] < 255:
                gray = image.getchannel("A")
            else:
                gray = image.convert("L")
    except OSError as exc:
        raise InputError(f"cannot read mask {path}: {exc}") from None
    if size is not None and gray.size != (size[1], size[0]):
        gray = gray.resize((size[1], size[0]), Image.NEAREST)
    return (np.asarray(gray, np.float32) >= 127.5).astype(np.float32)


class ObjectMasks:
    """Object-shaped masks from files: a random one, resized to cover the crop, randomly placed and flipped."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)

    @classmethod
    def from_folders(cls, folders: list[str]) -> ObjectMasks:
        return cls([p for folder in folders for p in list_images(folder)])

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image

        if not self.paths:
            raise InputError("no object masks to draw from")
        mask = load_mask(self.paths[int(rng.integers(len(self.paths)))])
        h, w = mask.shape
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        image = Image.fromarray((mask * 255).astype(np.uint8)).resize((nw, nh), Image.NEAREST)
        mask = np.asarray(image, np.float32) / 255.0
        y = int(rng.integers(nh - height + 1))
        x = int(rng.integers(nw - width + 1))
        mask = mask[y:y + height, x:x + width]
        if rng.random() < 0.5:
            mask = mask[:, ::-1]
        return np.ascontiguousarray(mask >= 0.5, dtype=np.float32)


def mask_seed(seed: int, index: int) -> np.random.Generator:
    """The generator of mask ``index`` in a set seeded by ``seed`` (independent of the set's size)."""
    return np.random.default_rng([seed, index])


def write_mask_set(folder: str | Path, preset: str, count: int, seed: int, size: tuple[int, int] | None = None) -> list[Path]:
    """Write ``count`` PNG masks (white = hole) named ``mask_000000.png`` ...; refuses a non-empty folder."""
    from PIL import Image

    folder = Path(folder)
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder} is not empty; choose a new folder (masks are never overwritten)")
    generator = MaskGenerator(preset)
    height, width = size or (generator.preset.resolution, generator.preset.resolution)
    if height < 8 or width < 8:
        raise InputError(f"mask size {height}×{width} is too small")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        mask = generator(height, width, mask_seed(seed, i))
        path = folder / f"mask_{i:06d}.png"
        Image.fromarray((mask * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths
