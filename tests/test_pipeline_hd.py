"""HD strategies: crop around mask components, resize, original; non-square and large inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from moebius.pipeline import hd, masks
from test_pipeline import run, tiny_pipeline

PLAN = dict(crop_trigger_size=800, crop_margin=128, resize_limit=1280, native_size=512)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def photo(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([128 + 90 * np.sin(x / 37 + c) * np.cos(y / 23 - c) for c in range(3)], -1)
    return rgb.astype(np.uint8)


def two_blobs(width: int, height: int) -> np.ndarray:
    hole = np.zeros((height, width), bool)
    hole[100:160, 150:230] = True  # top left
    hole[600:700, 1000:1100] = True  # bottom right, far from the first
    return hole


# ----------------------------------------------------------------------------------------------------
# Planning


def test_components_and_crop_boxes_on_a_1200x800_photo():
    hole = two_blobs(1200, 800)
    assert hd.component_boxes(hole) == [(144, 96, 232, 160), (1000, 600, 1104, 704)]  # to 8-px cells
    strategy, regions = hd.plan_regions(hole, "crop", **PLAN)
    assert strategy == "crop" and len(regions) == 2
    for region in regions:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < x1 <= 1200 and 0 <= y0 < y1 <= 800
        assert min(region.box_size) >= 512 and region.size == region.box_size  # native scale, no resampling
    covered = np.zeros_like(hole)
    for region in regions:
        x0, y0, x1, y1 = region.box
        assert not covered[y0:y1, x0:x1].any()  # disjoint
        covered[y0:y1, x0:x1] = True
    assert covered[hole].all()
    # The feather band stays inside the crops (margin 128 >> band).
    assert covered[masks.feather_alpha(hole, 3.0) > 0].all()


def test_close_components_share_a_crop():
    hole = np.zeros((800, 1200), bool)
    hole[300:320, 300:320] = True
    hole[300:320, 500:520] = True
    assert len(hd.component_boxes(hole)) == 2
    assert len(hd.plan_regions(hole, "crop", **PLAN)[1]) == 1


def test_large_crop_is_scaled_to_native_short_side():
    hole = np.zeros((3000, 4000), bool)
    hole[500:2000, 800:3000] = True
    (region,) = hd.plan_regions(hole, "crop", **PLAN)[1]
    assert min(region.size) == 512 and region.size[0] > region.size[1]


def test_small_mask_on_a_large_photo_costs_one_native_tile():
    hole = np.zeros((3000, 4000), bool)
    hole[1400:1460, 2000:2090] = True
    strategy, (region,) = hd.plan_regions(hole, "crop", **PLAN)
    assert strategy == "crop" and region.size == (512, 512) and region.box_size == (512, 512)


def test_below_the_trigger_runs_at_original_size():
    hole = np.zeros((600, 800), bool)
    hole[10:20, 10:20] = True
    assert hd.plan_regions(hole, "crop", **PLAN) == ("original", [hd.Region((0, 0, 800, 600), (800, 600))])


def test_resize_and_original_plans():
    hole = two_blobs(1600, 1000)
    (region,) = hd.plan_regions(hole, "resize", **PLAN)[1]
    assert region.box == (0, 0, 1600, 1000) and region.size == (1280, 800)
    (region,) = hd.plan_regions(hole, "original", **PLAN)[1]
    assert region.size == (1600, 1000)


def test_tile_round_trip_pads_and_restores():
    rgb = photo(100, 70)
    hole = np.zeros((70, 100), bool)
    hole[20:24, 30:34] = True
    region = hd.Region((10, 5, 100, 70), (45, 33))
    tile = hd.extract_tile(rgb, hole, region, 32)
    assert tile.rgb.shape == (64, 64, 3) and tile.content == (45, 33) and not tile.hole[33:].any()
    assert tile.hole.any()  # a 4-px hole survives a 2x downscale
    assert hd.restore_tile(tile.rgb, tile, region).shape == (65, 90, 3)


# ----------------------------------------------------------------------------------------------------
# Through the pipeline (tiny models; scaled-down crop settings keep tiles small)


@pytest.mark.parametrize("strategy", ["crop", "resize", "original"])
def test_each_strategy_on_a_non_square_photo(pipe, strategy):
    image = photo(1200, 800)
    hole = two_blobs(1200, 800)
    mask = np.where(hole, 255, 0).astype(np.uint8)
    options = dict(hd_strategy=strategy, native_size=128, crop_margin=32, resize_limit=400, num_inference_steps=1)
    out = run(pipe, image, mask, **options)
    result, meta = out.images[0], out.metadata[0]
    assert result.shape == image.shape and meta.hd_strategy == strategy
    band = masks.feather_alpha(hole, 3.0) > 0
    assert np.array_equal(result[~band], image[~band])
    assert (result[hole] != image[hole]).mean() > 0.5
    expected_tiles = {"crop": 2, "resize": 1, "original": 1}[strategy]
    assert len(meta.regions) == expected_tiles
    if strategy == "resize":
        assert meta.work_sizes == ((400, 267),)
    if strategy == "crop":
        assert all(min(size) == 128 for size in meta.work_sizes)


def test_large_photo_with_small_mask_is_cheap(pipe):
    image = photo(4000, 3000)
    mask = np.zeros((3000, 4000), np.uint8)
    mask[1400:1460, 2000:2090] = 255
    start = time.perf_counter()
    out = run(pipe, image, mask, native_size=128, crop_margin=32, num_inference_steps=1)
    elapsed = time.perf_counter() - start
    assert out.metadata[0].work_sizes == ((154, 128),) or max(out.metadata[0].work_sizes[0]) <= 160
    hole = mask >= 128
    band = masks.feather_alpha(hole, 3.0) > 0
    assert np.array_equal(out.images[0][~band], image[~band])
    assert elapsed < 30  # generous: the whole-image work is a few numpy passes over 12 MP
