"""Bytes in, bytes out: decoding uploads under the server's limits, encoding results in the input's format.

The pixel limit is checked from the header before any pixel is decoded, so a small file that claims a
huge canvas (a decompression bomb) costs nothing; :func:`claimed_pixels` reads that header alone, so the
server can admit the decoding by its size (:mod:`.admission`). Every failure is an :class:`HTTPProblem`
with a 4xx status and one line a person can act on.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..pipeline.image_io import ImageData, to_image_data, to_mask_array, write_image
from .errors import HTTPProblem

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff",
         "GIF": "image/png"}
_WRITE_AS = {"GIF": "PNG", "MPO": "JPEG"}  # formats we read but answer in another


@dataclass
class Upload:
    """A decoded upload: pixels (+ alpha, EXIF, ICC) and the container format it came in."""

    data: ImageData
    format: str


def claimed_pixels(raw: bytes, label: str, max_pixels: int) -> int:
    """Width x height as the header states it (no pixel decoded); refused over ``max_pixels``."""
    width, height = _open_header(raw, label, max_pixels).size
    return width * height


def open_checked(raw: bytes, label: str, max_pixels: int) -> Image.Image:
    """Open ``raw`` as an image, refuse it if it claims more than ``max_pixels``, then decode it fully."""
    img = _open_header(raw, label, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise HTTPProblem(422, f"{label}: the image data is damaged or truncated ({_first_line(exc)})") from None
    return img


def _open_header(raw: bytes, label: str, max_pixels: int) -> Image.Image:
    if not raw:
        raise HTTPProblem(422, f"{label}: the upload is empty")
    try:
        img = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError:
        raise HTTPProblem(413, f"{label}: the image claims far more pixels than the {max_pixels / 1e6:.1f} MP this "
                               "server accepts (decompression bomb refused)") from None
    except UnidentifiedImageError:
        raise HTTPProblem(422, f"{label}: not a readable image (PNG, JPEG, WebP, BMP, TIFF or GIF)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise HTTPProblem(422, f"{label}: not a readable image ({_first_line(exc)})") from None
    width, height = img.size
    if width * height > max_pixels:
        raise HTTPProblem(413, f"{label}: {width}x{height} is {width * height / 1e6:.1f} MP; this server accepts "
                               f"at most {max_pixels / 1e6:.1f} MP")
    return img


def decode_image(raw: bytes, max_pixels: int, label: str = "image") -> Upload:
    img = open_checked(raw, label, max_pixels)
    fmt = img.format or "PNG"
    try:
        return Upload(to_image_data(img, label), fmt)
    except InputError as exc:
        raise HTTPProblem(422, str(exc)) from None


def decode_mask(raw: bytes, max_pixels: int, label: str = "mask") -> np.ndarray:
    img = open_checked(raw, label, max_pixels)
    try:
        return to_mask_array(img, label)
    except InputError as exc:
        raise HTTPProblem(422, str(exc)) from None


def check_mask_size(mask: np.ndarray, image: ImageData, resize: bool | None) -> None:
    """Refuse a mask of another size than the image unless ``resize`` (the native ``resize_mask`` field) is set;
    ``None`` means the route has no such field, so the message does not offer it."""
    if (mask.shape[1], mask.shape[0]) == image.size or resize:
        return
    remedy = "send a mask of the image's size" + (" or set resize_mask=true" if resize is not None else "")
    raise HTTPProblem(422, f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.size[0]}x"
                           f"{image.size[1]}; {remedy}")


def pipeline_input(upload: Upload) -> np.ndarray:
    """(H, W, 3) or, when the image has alpha, (H, W, 4) uint8: the pipeline keeps the alpha."""
    data = upload.data
    return data.rgb if data.alpha is None else np.dstack([data.rgb, data.alpha])


def encode(image: Image.Image, upload: Upload, text: dict[str, str] | None = None,
           quality: int = 95) -> tuple[bytes, str]:
    """The result in the input's container format, with its EXIF and ICC -> (bytes, media type)."""
    fmt = _WRITE_AS.get(upload.format, upload.format)
    if fmt not in _MIME:
        fmt = "PNG"
    out = io.BytesIO()
    write_image(image, out, fmt, exif=upload.data.exif, icc_profile=upload.data.icc_profile, text=text,
                quality=quality)
    return out.getvalue(), _MIME[fmt]


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _first_line(exc: BaseException) -> str:
    """The exception's first line, without Python object reprs (``<_io.BytesIO object at 0x...>``)."""
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
