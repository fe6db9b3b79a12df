"""Classical inpainting baselines that need no weights, behind the same interface as a model.

An *inpainter* is any callable ``(image: PIL RGB, mask: PIL L) -> PIL RGB`` of the image's size, where mask
pixels >= 128 are holes. :func:`get_method` returns one by name:

* ``telea``: ``cv2.inpaint(..., cv2.INPAINT_TELEA)``, fast marching (Telea 2004);
* ``navier-stokes``: ``cv2.inpaint(..., cv2.INPAINT_NS)`` (Bertalmio et al. 2001);
* ``biharmonic``: ``skimage.restoration.inpaint_biharmonic`` (solves the biharmonic equation per hole);
* ``identity``: returns the input unchanged (holes keep whatever the input holds; a floor for sanity checks).

OpenCV and scikit-image are imported when a method is built, so importing this module costs nothing.
Known pixels are copied back after inpainting, so every method changes only the hole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from ..pipeline.prefill import classical_fill

Inpainter = Callable[[Image.Image, Image.Image], Image.Image]

METHODS = ("telea", "navier-stokes", "biharmonic", "identity")


def _arrays(image: Image.Image, mask: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(image.convert("RGB"))
    hole = np.asarray(mask.convert("L")) >= 128
    if hole.shape != rgb.shape[:2]:
        raise InputError(f"mask size {hole.shape[::-1]} differs from image size {rgb.shape[1::-1]}")
    return rgb, hole


def _paste(rgb: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> Image.Image:
    out = rgb.copy()
    out[hole] = filled[hole]
    return Image.fromarray(out)


@dataclass(frozen=True)
class OpenCVInpaint:
    """``cv2.inpaint`` with the Telea or Navier-Stokes algorithm (radius 3 px; :mod:`moebius.pipeline.prefill`)."""

    algorithm: str = "telea"

    def __call__(self, image: Image.Image, mask: Image.Image) -> Image.Image:
        rgb, hole = _arrays(image, mask)
        return Image.fromarray(classical_fill(rgb, hole, self.algorithm))


@dataclass(frozen=True)
class BiharmonicInpaint:
    """``skimage.restoration.inpaint_biharmonic`` per channel, each connected hole solved separately."""

    def __post_init__(self) -> None:
        try:
            import skimage.restoration  # noqa: F401
        except ImportError:
            raise InputError("the biharmonic baseline needs scikit-image (pip install 'moebius-inpaint[eval]')") from None

    def __call__(self, image: Image.Image, mask: Image.Image) -> Image.Image:
        from skimage.restoration import inpaint_biharmonic

        rgb, hole = _arrays(image, mask)
        if not hole.any():
            return Image.fromarray(rgb.copy())
        filled = inpaint_biharmonic(rgb.astype(np.float64) / 255.0, hole, split_into_regions=True, channel_axis=-1)
        filled = np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)
        return _paste(rgb, filled, hole)


def identity(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The input, unchanged (a reference point: what a method that does nothing scores)."""
    rgb, _ = _arrays(image, mask)
    return Image.fromarray(rgb.copy())


def get_method(name: str) -> Inpainter:
    """The baseline called ``name`` (one of :data:`METHODS`)."""
    if name == "telea":
        return OpenCVInpaint("telea")
    if name == "navier-stokes":
        return OpenCVInpaint("navier-stokes")
    if name == "biharmonic":
        return BiharmonicInpaint()
    if name == "identity":
        return identity
    raise InputError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def describe(name: str) -> str:
    """One line naming the implementation behind a method, with library versions, for reports."""
    if name in ("telea", "navier-stokes"):
        import cv2

        return f"cv2.inpaint {'INPAINT_TELEA' if name == 'telea' else 'INPAINT_NS'} radius 3 (opencv {cv2.__version__})"
    if name == "biharmonic":
        import skimage

        return f"skimage.restoration.inpaint_biharmonic split_into_regions (scikit-image {skimage.__version__})"
    if name == "identity":
        return "identity (input returned unchanged)"
    return name
