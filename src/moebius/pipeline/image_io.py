"""Images and masks in and out: decoding what users really have, validating it, writing results safely.

Inputs accepted everywhere: PIL images, numpy arrays (H, W), (H, W, 1|3|4) as uint8, uint16,
bool or float in [0, 1], and torch tensors (C, H, W) or (1, C, H, W) in [0, 1] (or uint8). Files are read
with EXIF orientation applied; palette, grayscale, 16-bit and CMYK images become 8-bit RGB; an alpha
channel is kept beside the RGB so the result can carry it again.

Masks: white (255) means "fill". A mask file with real transparency (strokes painted on a transparent
layer, as IOPaint's editor saves them) is read from its alpha channel; anything else from its luminance.
An image's own alpha can also serve as the mask (transparent = fill): :func:`mask_from_alpha`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..files import atomic_write

if TYPE_CHECKING:
    import torch

ImageInput = Union[Image.Image, np.ndarray, "torch.Tensor", str, os.PathLike]

# Pillow refuses images above ~179 MP as a decompression bomb; a 16k x 12k photo is still fine.
_MAX_PIXELS = 16384 * 16384


@dataclass
class ImageData:
    """A decoded input image: rgb (H, W, 3) uint8, alpha (H, W) uint8 or None, plus what to write back."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's order."""
        return self.rgb.shape[1], self.rgb.shape[0]


# ----------------------------------------------------------------------------------------------------
# Files


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file; any failure is an :class:`InputError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return _keep_format(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read this image ({detail})") from None


def _keep_format(img: Image.Image) -> Image.Image:
    # copy() drops .format; keep it so callers can tell a JPEG from a PNG.
    out = img.copy()
    out.format = img.format  # type: ignore[misc]
    return out


def write_image(image: Image.Image, handle: Any, fmt: str, *, exif: bytes | None = None,
                icc_profile: bytes | None = None, text: dict[str, str] | None = None, quality: int = 95) -> None:
    """Encode ``image`` as ``fmt`` into a binary file object, keeping EXIF, ICC and (PNG) text chunks.

    JPEG cannot hold alpha, so an RGBA image written as JPEG loses it.
    """
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    kwargs: dict[str, Any] = {}
    if exif:
        kwargs["exif"] = exif
    if icc_profile:
        kwargs["icc_profile"] = icc_profile
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt == "PNG" and text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        kwargs["pnginfo"] = info
    image.save(handle, format=fmt, **kwargs)


def save_image(image: Image.Image, path: str | os.PathLike, *, exif: bytes | None = None,
               icc_profile: bytes | None = None, text: dict[str, str] | None = None, quality: int = 95) -> Path:
    """Write ``image`` atomically (:func:`moebius.files.atomic_write`); the format follows the suffix.

    See :func:`write_image` for what is kept. A write that fails (read-only folder, full disk) raises
    :class:`moebius.files.WriteError` naming ``path``.
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image file extension {path.suffix!r}")
    with atomic_write(path) as handle:
        write_image(image, handle, fmt, exif=exif, icc_profile=icc_profile, text=text, quality=quality)
    return path


# ----------------------------------------------------------------------------------------------------
# Images


def to_image_data(image: ImageInput, source: str = "image") -> ImageData:
    """Decode any accepted image input to 8-bit RGB (+ alpha). ``source`` names it in error messages."""
    if isinstance(image, (str, os.PathLike)):
        source = str(image)
        image = load_image(image)
    if isinstance(image, Image.Image):
        return _pil_to_data(image)
    array = _array_from(image, source)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{source}: expected (H, W), (H, W, 1|3|4) or (C, H, W), got shape {tuple(array.shape)}")
    array = _to_uint8(array, source)
    channels = array.shape[2]
    rgb = np.repeat(array[:, :, :1], 3, axis=2) if channels in (1, 2) else array[:, :, :3]
    alpha = array[:, :, -1] if channels in (2, 4) else None
    return ImageData(np.ascontiguousarray(rgb), None if alpha is None else np.ascontiguousarray(alpha))


def _pil_to_data(img: Image.Image) -> ImageData:
    _check_size(img.size, "image")
    img = ImageOps.exif_transpose(img)  # returns a copy with the orientation applied and the tag removed
    exif = img.getexif()
    icc = img.info.get("icc_profile")
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _to_uint8(np.asarray(img)[:, :, None], "image")
        return ImageData(np.repeat(gray, 3, axis=2), None, exif.tobytes() if exif else None, icc)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if mode == "1":
        img = img.convert("L")
    rgba = img.convert("RGBA") if has_alpha else img.convert("RGB")
    array = np.asarray(rgba)
    rgb = np.ascontiguousarray(array[:, :, :3])
    alpha = np.ascontiguousarray(array[:, :, 3]) if has_alpha else None
    return ImageData(rgb, alpha, exif.tobytes() if exif else None, icc)


def _array_from(image: Any, source: str) -> np.ndarray:
    # A tensor can only come from a caller that imported torch; the ONNX pipeline never does.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise InputError(f"{source}: a 4-D tensor must hold one image; pass a list for a batch")
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 2, 3, 4) and t.shape[-1] not in (1, 2, 3, 4):
            t = t.permute(1, 2, 0)  # (C, H, W) -> (H, W, C), the diffusers "pt" layout
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.float()
        return t.numpy()
    if isinstance(image, np.ndarray):
        return image
    raise InputError(f"{source}: unsupported input type {type(image).__name__}; pass a PIL image, array, tensor or path")


def _to_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 as is; uint16 /257; bool x255; float in [0, 1] x255 rounded; wider ints must fit 8 or 16 bits."""
    _check_size((array.shape[1], array.shape[0]), source)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{source}: contains NaN or infinite values")
        lo, hi = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"{source}: float values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min(initial=0)), int(array.max(initial=0))
        if lo < 0 or hi > 65535:
            raise InputError(f"{source}: integer values must lie in [0, 65535], got [{lo}, {hi}]")
        if array.dtype != np.uint16 and hi <= 255:
            return array.astype(np.uint8)
        # 16-bit: 65535 / 257 = 255 exactly, so full scale maps to full scale.
        return np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    raise InputError(f"{source}: unsupported array dtype {array.dtype}")


def _check_size(size: tuple[int, int], source: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"{source}: empty image ({width}x{height})")
    if width * height > _MAX_PIXELS:
        raise InputError(f"{source}: {width}x{height} is larger than the {_MAX_PIXELS // 2**20} MP this tool accepts")


# ----------------------------------------------------------------------------------------------------
# Masks


def to_mask_array(mask: ImageInput, source: str = "mask") -> np.ndarray:
    """Decode any accepted mask input to a soft (H, W) uint8 map, 255 = fill.

    A mask with real transparency is read from its alpha channel (opaque = fill); otherwise from its
    luminance (PIL's ``convert("L")`` weights, as the official loader uses).
    """
    if isinstance(mask, (str, os.PathLike)):
        source = str(mask)
        mask = load_image(mask)
    if isinstance(mask, Image.Image):
        mask = ImageOps.exif_transpose(mask)
        _check_size(mask.size, source)
        if mask.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            return _to_uint8(np.asarray(mask), source)
        if mask.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mask.mode == "P" and "transparency" in mask.info):
            alpha = np.asarray(mask.convert("RGBA"))[:, :, 3]
            if alpha.min() != alpha.max():
                return np.ascontiguousarray(alpha)
        return np.asarray(mask.convert("L"))
    data = _array_from(mask, source)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim == 2:
        return _to_uint8(data, source)
    as_image = to_image_data(data, source)
    if as_image.alpha is not None and as_image.alpha.min() != as_image.alpha.max():
        return as_image.alpha
    return np.asarray(Image.fromarray(as_image.rgb).convert("L"))


def mask_from_alpha(data: ImageData, source: str = "image") -> np.ndarray:
    """The fill mask an RGBA image implies: transparent pixels (alpha < 128) are filled. -> (H, W) uint8."""
    if data.alpha is None:
        raise InputError(f"{source}: no mask given and the image has no alpha channel to take one from")
    return np.where(data.alpha < 128, 255, 0).astype(np.uint8)


def match_mask_size(mask: np.ndarray, size: tuple[int, int], resize: bool, source: str = "mask") -> np.ndarray:
    """Check the mask is ``size`` = (width, height), or resize it there (nearest) when ``resize``."""
    if (mask.shape[1], mask.shape[0]) == size:
        return mask
    if not resize:
        raise InputError(
            f"{source} is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}; "
            "pass resize_mask=True (CLI: --resize-mask) to resize the mask to the image"
        )
    return np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
