"""docs/experiments/scripts/autoencoder_ceiling.py: a classical fill through an autoencoder, pasted back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench_scripts import load_experiment

pytest.importorskip("cv2")

from moebius.eval.baselines import get_method
from moebius.models.space_to_depth import SpaceToDepth, SpaceToDepthConfig
from moebius.models.vae import AutoencoderKL, VAEConfig


def photo_and_mask(size: int = 64) -> tuple[Image.Image, Image.Image, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    rgb = np.stack([xx * 3, yy * 3, (xx + yy) * 2], axis=2) % 256 + rng.integers(0, 20, (size, size, 3))
    hole = np.zeros((size, size), bool)
    hole[20:40, 16:44] = True
    return Image.fromarray(rgb.astype(np.uint8)), Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)), hole


def test_a_lossless_autoencoder_scores_exactly_the_fill():
    image, mask, _ = photo_and_mask()
    s2d = SpaceToDepth(SpaceToDepthConfig(factor=4))
    inpaint = load_experiment("autoencoder_ceiling").round_trip_fill("telea", s2d, feather=3.0)
    assert np.array_equal(np.asarray(inpaint(image, mask)), np.asarray(get_method("telea")(image, mask)))


def test_a_lossy_autoencoder_changes_the_hole_and_keeps_the_rest():
    image, mask, hole = photo_and_mask()
    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)).eval()
    out = np.asarray(load_experiment("autoencoder_ceiling").round_trip_fill("telea", vae, feather=3.0)(image, mask))
    telea = np.asarray(get_method("telea")(image, mask))
    far = np.ones_like(hole)
    far[12:48, 8:52] = False  # the hole grown by more than the feather band's reach
    assert np.array_equal(out[far], np.asarray(image)[far])
    assert np.abs(out[hole].astype(int) - telea[hole]).mean() > 5
