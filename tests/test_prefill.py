"""Classical pre-fills: the hole filled by OpenCV before a strength < 1 refinement (moebius.pipeline.prefill)."""

from __future__ import annotations

import numpy as np
import pytest

from moebius.errors import ConfigError, InputError
from moebius.pipeline import get_preset
from moebius.pipeline.prefill import classical_fill

from test_pipeline import run, scene, tiny_pipeline

pytest.importorskip("cv2")


@pytest.mark.parametrize("method", ["telea", "navier-stokes"])
def test_fill_changes_only_the_hole_and_never_reads_it(method):
    image, mask = scene()
    hole = mask > 0
    other = image.copy()
    other[hole] = 255 - other[hole]  # different content under the hole
    filled = classical_fill(image, hole, method)
    assert np.array_equal(filled[~hole], image[~hole])
    assert not np.array_equal(filled[hole], image[hole])
    assert np.array_equal(classical_fill(other, hole, method), filled)
    assert not np.shares_memory(filled, image)


def test_fill_follows_the_surroundings():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (200, 40, 40)
    image[:, 32:] = (40, 40, 200)
    hole = np.zeros((48, 64), bool)
    hole[16:32, 8:20] = True  # inside the red half
    filled = classical_fill(image, hole, "navier-stokes")
    assert np.abs(filled[hole].astype(int) - (200, 40, 40)).max() <= 2


def test_unknown_fill_and_prefill_without_refinement_are_refused():
    image, mask = scene()
    with pytest.raises(InputError, match="unknown fill"):
        classical_fill(image, mask > 0, "biharmonic")
    with pytest.raises(ConfigError, match="prefill"):
        get_preset("default").replace(prefill="lama")
    with pytest.raises(ConfigError, match="needs strength < 1"):
        get_preset("default").replace(prefill="telea")
    assert get_preset("default").replace(prefill="telea", strength=0.3).prefill == "telea"


def test_prefilled_refinement_never_sees_what_the_input_holds_under_the_mask():
    pipe = tiny_pipeline()
    image, mask = scene()
    other = image.copy()
    other[mask > 0] = 0
    opts = dict(strength=0.5, num_inference_steps=4)
    plain = [run(pipe, x, mask, **opts).images[0] for x in (image, other)]
    assert not np.array_equal(*plain)  # without a pre-fill, strength < 1 encodes the hole's content
    filled = [run(pipe, x, mask, prefill="navier-stokes", **opts).images[0] for x in (image, other)]
    assert np.array_equal(*filled)
    assert not np.array_equal(filled[0], plain[0])
    recorded = {}
    run(pipe, image, mask, prefill="navier-stokes", intermediates=recorded, **opts)
    assert recorded  # and the start latent is the pre-filled image's
    start = {}
    run(pipe, classical_fill(image, mask > 127, "navier-stokes"), mask, intermediates=start, **opts)
    assert np.array_equal(recorded["image_latents"].numpy(), start["image_latents"].numpy())
