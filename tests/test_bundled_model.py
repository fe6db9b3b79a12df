"""The small model shipped inside the package (moebius/weights/small; docs/training.md, "The shipped model").

These tests load the real bundled weights, so a broken or missing copy fails them: it is what `moebius
inpaint` uses on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moebius.eval.metrics import psnr
from moebius.pipeline import MoebiusInpaintPipeline, masks
from moebius.pipeline.prefill import classical_fill
from moebius.weights.bundled import default_model_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PSNR_TO_PREFILL = 25.0


@pytest.fixture(scope="module")
def bundled() -> MoebiusInpaintPipeline:
    folder = default_model_dir()
    assert folder is not None, "the package carries no bundled model"
    pipe = MoebiusInpaintPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_card_travels_with_the_weights():
    card = (default_model_dir() / "MODEL_CARD.md").read_text()
    for section in ("Data", "Compute", "Metrics", "Limitations"):
        assert f"## {section}" in card
    size = sum(f.stat().st_size for f in default_model_dir().rglob("*") if f.is_file())
    assert size <= 20 * 10**6


def test_bundled_model_refines_a_navier_stokes_fill_without_cfg(bundled):
    assert bundled.defaults["prefill"] == "navier-stokes" and bundled.defaults["guidance_scale"] == 1.0
    assert bundled.defaults["strength"] < 1.0
    assert bundled.scheduler_config.prediction_type == "v_prediction"


def test_bundled_model_keeps_the_example_outside_the_hole_and_refines_the_fill(bundled):
    photo = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"))
    mask = np.asarray(Image.open(EXAMPLES / "coffee_mask.png").convert("L"))
    hole = mask > 127
    out = bundled(photo, mask, seed=0, output_type="np").images[0]
    assert out.shape == photo.shape
    band = masks.feather_alpha(hole, 3.0) > 0
    assert np.array_equal(out[~band], photo[~band])  # untouched beyond the feather band
    ns = classical_fill(photo, hole, "navier-stokes")
    assert psnr(out, ns, hole) > PSNR_TO_PREFILL  # a refinement of the pre-fill, not a new picture
    assert psnr(out, photo, hole) < psnr(ns, photo, hole) + 1  # and the spoon stays gone


# (y0, x0, y1, x1): the cup's wall and crema; the saucer's rim and the table
@pytest.mark.parametrize("box", [(40, 300, 104, 364), (250, 60, 314, 124)])
def test_bundled_model_fills_a_known_region_about_as_faithfully_as_navier_stokes(bundled, box):
    """A hole where the photo's content is known: the fill stays as close to it as the Navier-Stokes fill it
    refines (the autoencoder's round trip costs some PSNR), and far closer than grey or noise."""
    photo = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"))
    hole = np.zeros(photo.shape[:2], bool)
    y0, x0, y1, x1 = box
    hole[y0:y1, x0:x1] = True
    out = bundled(photo, hole.astype(np.uint8) * 255, seed=0, output_type="np").images[0]
    grey = photo.copy()
    grey[hole] = 128
    noise = photo.copy()
    noise[hole] = np.random.default_rng(0).integers(0, 256, (int(hole.sum()), 3))
    ours = psnr(out, photo, hole)
    assert ours > psnr(classical_fill(photo, hole, "navier-stokes"), photo, hole) - 1.5
    assert ours > psnr(grey, photo, hole) + 3 and ours > psnr(noise, photo, hole) + 6
