"""Training masks (LaMa-style presets, object masks, dilation), gen-masks, and the training data pipeline."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest
import torch

from moebius.errors import ConfigError, InputError
from moebius.mask_generators import (PRESETS, BoxSpec, MaskGenerator, ObjectMasks, StrokeSpec, dilate, load_mask,
                                     mask_seed, random_boxes, random_strokes, write_mask_set)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_draws_reproducible_masks(name):
    generator = MaskGenerator(name)  # the official thin presets crash as shipped (variants_n); ours work
    side = PRESETS[name].resolution
    masks = [generator(side, side, mask_seed(7, i)) for i in range(6)]
    again = [generator(side, side, mask_seed(7, i)) for i in range(6)]
    for m, a in zip(masks, again):
        assert m.shape == (side, side) and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        np.testing.assert_array_equal(m, a)
    assert not all(np.array_equal(masks[0], m) for m in masks[1:])
    ratios = [m.mean() for m in masks]
    assert 0 < np.mean(ratios) < 0.9


def test_stroke_and_box_ranges():
    rng = np.random.default_rng(0)
    boxes = random_boxes(BoxSpec(1.0, 1, 1, 10, 20, margin=5), 64, 64, rng)
    ys, xs = np.nonzero(boxes)
    assert ys.min() >= 5 and xs.min() >= 5 and ys.max() < 59 and xs.max() < 59
    assert 10 <= ys.max() - ys.min() + 1 <= 20 and 10 <= xs.max() - xs.min() + 1 <= 20
    # Widest stroke: 5 + max_width - 1 px; one stroke with one segment bounds the hole's extent.
    thin = random_strokes(StrokeSpec(1.0, 1, 1, 1, 4, 1), 64, 64, np.random.default_rng(3))
    assert 0 < thin.sum() < 64 * 64 * 0.1


def test_dilate_grows_by_the_kernel_radius():
    m = np.zeros((11, 11), np.float32)
    m[5, 5] = 1
    assert dilate(m, 3).sum() == 9 and dilate(m, 5).sum() == 25 and dilate(m, 3, iterations=2).sum() == 25


def test_object_masks_cover_the_crop(tmp_path):
    from PIL import Image

    blob = np.zeros((40, 30), np.uint8)
    blob[10:30, 5:20] = 255
    Image.fromarray(blob).save(tmp_path / "obj.png")
    objects = ObjectMasks.from_folders([str(tmp_path)])
    m = objects(16, 16, np.random.default_rng(0))
    assert m.shape == (16, 16) and 0 < m.mean() < 1
    assert load_mask(tmp_path / "obj.png", (4, 3)).shape == (4, 3)


def _cli(argv):
    from moebius.cli.train import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_gen_masks_writes_a_reproducible_set(tmp_path):
    from PIL import Image

    assert _cli(["gen-masks", str(tmp_path / "a"), "--preset", "thin_256", "--count", "3", "--seed", "5",
                 "--size", "64"]) == 0
    write_mask_set(tmp_path / "b", "thin_256", 5, seed=5, size=(64, 64))
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "a" / f"mask_{i:06d}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / f"mask_{i:06d}.png"))
        assert a.shape == (64, 64) and set(np.unique(a)) <= {0, 255}
        np.testing.assert_array_equal(a, b)  # a larger set extends a smaller one
    with pytest.raises(InputError, match="not empty"):
        _cli(["gen-masks", str(tmp_path / "a"), "--count", "1"])
    with pytest.raises(ConfigError, match="unknown mask preset"):
        _cli(["gen-masks", str(tmp_path / "c"), "--preset", "huge"])


# ----------------------------------------------------------------------------------------------------
# Data


def _dataset(tmp_path, **changes):
    from PIL import Image

    from moebius.train.config import DataConfig
    from moebius.train.data import InpaintingDataset, read_jsonl

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(tmp_path / "tall.png")
    hole = np.zeros((40, 20), np.uint8)
    hole[30:38, 4:12] = 255  # near the bottom: the crop must move down to keep it
    Image.fromarray(hole).save(tmp_path / "tall_mask.png")
    lines = [{"image": "wide.png", "prompt": "background"},
             {"image": "tall.png", "prompt": "foreground", "mask": "tall_mask.png"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    config = DataConfig(jsonl=[str(tmp_path / "data.jsonl")], resolution=16, num_workers=0, mask_preset="medium_256",
                        **changes)
    return InpaintingDataset(read_jsonl(tmp_path / "data.jsonl"), config, seed=3)


def test_items_follow_the_official_format(tmp_path):
    from moebius.train.data import training_tensors

    dataset = _dataset(tmp_path, dilate_p=0.0, flip_p=0.0)
    for key in range(6):
        item = dataset[key]
        assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16)
        assert item["image"].dtype == item["mask"].dtype == torch.uint8
        assert set(item["mask"].unique().tolist()) <= {0, 1}
        image, hole, masked = training_tensors(torch.utils.data.default_collate([item]), "cpu")
        assert image.min() >= -1 and image.max() <= 1 and image.dtype == torch.float32
        torch.testing.assert_close(image, item["image"][None].float() / 127.5 - 1)
        torch.testing.assert_close(masked, image * (1 - hole))
        assert torch.equal(masked[hole.expand_as(masked) > 0], torch.zeros_like(masked[hole.expand_as(masked) > 0]))
        ids = item["input_ids"].tolist()
        if dataset.items[dataset.index_of(key)].prompt == "foreground":
            assert ids == list(range(10, 20))
            full = load_mask(tmp_path / "tall_mask.png", (32, 16)).sum()  # the hole at the resized size
            assert item["mask"].sum() >= 0.5 * full  # the hole-biased crop keeps at least min_hole_overlap of it
        else:
            assert ids == list(range(10))
        again = dataset[key]
        for name in item:
            assert torch.equal(item[name], again[name])


def test_category_dropout_gives_background_items_the_foreground_ids(tmp_path):
    plain, dropped = _dataset(tmp_path), _dataset(tmp_path, category_dropout_p=0.5)
    background = [k for k in range(40) if plain.items[plain.index_of(k)].prompt == "background"]
    ids = [dropped[k]["input_ids"].tolist() for k in background]
    swapped = sum(i == list(range(10, 20)) for i in ids)
    assert 0 < swapped < len(background) and all(i in (list(range(10)), list(range(10, 20))) for i in ids)
    for k in background:  # image and mask are drawn before the dropout, so they do not change
        assert torch.equal(plain[k]["image"], dropped[k]["image"]) and torch.equal(plain[k]["mask"], dropped[k]["mask"])
    assert all(plain[k]["input_ids"].tolist() == list(range(10)) for k in background)


def test_key_sampler_is_layout_independent():
    from moebius.train.data import KeySampler

    one = list(itertools.islice(iter(KeySampler(4, 0, 1, start=3)), 8))
    two = [list(itertools.islice(iter(KeySampler(2, r, 2, start=3)), 4)) for r in range(2)]
    assert one[:4] == two[0][:2] + two[1][:2] and one == list(range(12, 20))


def test_data_errors(tmp_path):
    from moebius.train.config import DataConfig
    from moebius.train.data import InpaintingDataset, Item, read_jsonl

    with pytest.raises(ConfigError, match="object masks"):  # the official code crashes mid-run instead
        InpaintingDataset([Item(tmp_path / "a.png")], DataConfig(object_mask_p=0.5), seed=0)
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "prompt": "cat"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        read_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "fg.jsonl").write_text('{"image": "a.png", "prompt": "foreground"}\n')
    with pytest.raises(InputError, match="needs a mask"):
        read_jsonl(tmp_path / "fg.jsonl")
