"""Inputs a user really has: EXIF orientation, alpha, grayscale/palette, 16-bit, soft and alpha masks,
mask operations, bad files and size mismatches."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from moebius.errors import InputError
from moebius.pipeline import image_io, masks
from test_pipeline import run, scene, tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def _png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------------------------------
# Image decoding


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # white stripe on the left of a landscape image
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "a.jpg", exif=exif.tobytes(), quality=100)
    data = image_io.to_image_data(tmp_path / "a.jpg")
    assert data.size == (20, 40)  # shown upright: portrait
    assert data.rgb[:10].mean() > 200 and data.rgb[-10:].mean() < 50  # the stripe is now on top
    exif = Image.Exif()
    exif.load(data.exif)
    assert exif.get(0x0112, 1) == 1  # the tag is reset, so a viewer does not rotate the result again


def test_grayscale_palette_and_bilevel_images_become_rgb():
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    data = image_io.to_image_data(gray)
    assert data.rgb.shape == (8, 8, 3) and data.alpha is None and (data.rgb[..., 0] == data.rgb[..., 2]).all()
    palette = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    assert image_io.to_image_data(palette).rgb[0, 0].tolist() == [255, 0, 0]
    palette.info["transparency"] = 3
    assert image_io.to_image_data(palette).alpha.tolist() == [[255, 255], [255, 0]]
    bilevel = Image.fromarray(np.eye(4, dtype=bool))
    assert image_io.to_image_data(bilevel).rgb[0, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_pngs(tmp_path):
    gray = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    data = image_io.to_image_data(tmp_path / "g16.png")
    assert np.array_equal(data.rgb[..., 0], np.arange(256, dtype=np.uint8).reshape(16, 16))
    rgb16 = np.random.default_rng(0).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png16_rgb(rgb16))
    data = image_io.to_image_data(tmp_path / "rgb16.png")
    assert data.rgb.dtype == np.uint8 and np.abs(data.rgb.astype(int) - rgb16 / 257).max() <= 1


def test_numpy_and_torch_inputs():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    as_float = image_io.to_image_data(rgb / 255.0).rgb
    as_tensor = image_io.to_image_data(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255).rgb
    as_batch = image_io.to_image_data(torch.from_numpy(rgb).permute(2, 0, 1)[None]).rgb
    assert np.array_equal(as_float, rgb) and np.array_equal(as_tensor, rgb) and np.array_equal(as_batch, rgb)
    with pytest.raises(InputError, match="float values must lie in"):
        image_io.to_image_data(rgb * 2.0)
    with pytest.raises(InputError, match="shape"):
        image_io.to_image_data(np.zeros((4, 4, 5), np.uint8))


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.png: cannot read"):
        image_io.to_image_data(bad)
    with pytest.raises(InputError, match="nothing.png: no such file"):
        image_io.to_mask_array(tmp_path / "nothing.png")
    truncated = tmp_path / "cut.png"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(buf, "PNG")
    truncated.write_bytes(buf.getvalue()[:60])
    with pytest.raises(InputError, match="cut.png"):
        image_io.to_image_data(truncated)


# ----------------------------------------------------------------------------------------------------
# Masks


def test_mask_from_luminance_alpha_and_sixteen_bit():
    lum = np.zeros((4, 4), np.uint8)
    lum[1, 1] = 200
    assert np.array_equal(image_io.to_mask_array(Image.fromarray(lum).convert("RGB")), lum)
    strokes = np.zeros((4, 4, 4), np.uint8)
    strokes[2, 3] = (255, 0, 0, 255)  # a red stroke on a transparent layer
    assert image_io.to_mask_array(Image.fromarray(strokes, "RGBA"))[2, 3] == 255
    assert image_io.to_mask_array(Image.fromarray(strokes, "RGBA")).sum() == 255
    opaque = np.dstack([np.repeat(lum[:, :, None], 3, 2), np.full((4, 4), 255, np.uint8)])
    assert np.array_equal(image_io.to_mask_array(Image.fromarray(opaque, "RGBA")), lum)  # uniform alpha: luminance
    assert image_io.to_mask_array(Image.fromarray(lum.astype(np.uint16) * 257))[1, 1] == 200
    assert image_io.to_mask_array(lum > 100)[1, 1] == 255


def test_soft_mask_threshold_and_invert():
    soft = np.array([[0, 127, 128, 255]], np.uint8)
    assert masks.binarize(soft).tolist() == [[False, False, True, True]]  # official: < 127.5 keeps
    assert masks.binarize(soft, threshold=10).tolist() == [[False, True, True, True]]
    assert masks.binarize(soft, invert=True).tolist() == [[True, True, False, False]]


def test_dilate_grows_a_near_disc():
    hole = np.zeros((41, 41), bool)
    hole[20, 20] = True
    grown = masks.dilate(hole, 10)
    ys, xs = np.nonzero(grown)
    assert xs.min() == 10 and xs.max() == 30 and ys.min() == 10 and ys.max() == 30
    assert not grown[10, 10] and grown[20, 10]  # corners cut: octagon, not a square
    assert np.array_equal(masks.dilate(hole, 0), hole)


def test_feather_band_width_follows_mask_blur():
    hole = np.zeros((60, 60), bool)
    hole[25:35, 25:35] = True
    widths = []
    for radius in (0, 2, 6):
        alpha = masks.feather_alpha(hole, radius)
        assert (alpha[hole] == 255).all()
        widths.append(int((alpha[30] > 0).sum()) - 10)
    assert widths[0] == 0 and 0 < widths[1] < widths[2] <= 2 * 3 * 6 + 6


def test_mask_options_reach_the_pipeline(pipe):
    image, _ = scene()
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[30, 40] = 255
    mask[10:20, 10:20] = 100  # soft, below the default threshold
    hole = mask >= 128
    base = run(pipe, image, mask, mask_blur=0).images[0]
    assert np.array_equal(base[~hole], image[~hole])
    grown = run(pipe, image, mask, mask_blur=0, mask_dilate=3).images[0]
    assert (grown[27:34, 40] != image[27:34, 40]).any() and np.array_equal(grown[:25], image[:25])
    low = run(pipe, image, mask, mask_blur=0, mask_threshold=50).images[0]
    assert (low[10:20, 10:20] != image[10:20, 10:20]).any()
    inverted = run(pipe, image, mask, mask_blur=0, invert_mask=True).images[0]
    assert np.array_equal(inverted[30, 40], image[30, 40]) and (inverted[0:5, 60:90] != image[0:5, 60:90]).any()


def test_empty_mask_after_threshold_returns_input(pipe):
    image, _ = scene()
    soft = np.full(image.shape[:2], 100, np.uint8)
    out = run(pipe, image, soft)
    assert np.array_equal(out.images[0], image) and out.metadata[0].skipped


def test_size_mismatch_is_an_error_unless_resize_mask(pipe):
    image, mask = scene(96, 64)
    small = np.asarray(Image.fromarray(mask).resize((48, 32), Image.NEAREST))
    with pytest.raises(InputError, match="mask is 48x32 but the image is 96x64.*resize_mask"):
        run(pipe, image, small)
    assert run(pipe, image, small, resize_mask=True).images[0].shape == image.shape


# ----------------------------------------------------------------------------------------------------
# Alpha through the pipeline


def test_rgba_alpha_is_preserved(pipe):
    image, mask = scene()
    alpha = np.tile(np.linspace(0, 255, image.shape[1]).astype(np.uint8), (image.shape[0], 1))
    rgba = Image.fromarray(np.dstack([image, alpha]), "RGBA")
    out = pipe(rgba, mask, num_inference_steps=2, seed=0).images[0]
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[:, :, 3], alpha)


def test_transparent_pixels_serve_as_the_mask(pipe):
    image, mask = scene()
    alpha = np.where(mask >= 128, 0, 255).astype(np.uint8)
    out = pipe(Image.fromarray(np.dstack([image, alpha]), "RGBA"), None, num_inference_steps=2, seed=0,
               output_type="np").images[0]
    hole = mask >= 128
    assert (out[:, :, 3] == 255).all()  # filled pixels become opaque
    assert (out[hole, :3] != image[hole]).any()
    band = masks.feather_alpha(hole, 3.0) > 0
    assert np.array_equal(out[~band, :3], image[~band])
    with pytest.raises(InputError, match="no alpha channel"):
        pipe(image, None)


def test_save_image_is_atomic_and_keeps_text(tmp_path):
    img = Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA")
    path = image_io.save_image(img, tmp_path / "out.png", text={"moebius": "{}"})
    assert Image.open(path).text["moebius"] == "{}" and list(tmp_path.iterdir()) == [path]
    jpg = image_io.save_image(img, tmp_path / "out.jpg")
    assert Image.open(jpg).mode == "RGB"
    with pytest.raises(InputError, match="extension"):
        image_io.save_image(img, tmp_path / "out.xyz")
