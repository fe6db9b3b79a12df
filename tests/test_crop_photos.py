"""scripts/crop_photos.py: native-scale random crops for training the small model at 64² and 128²."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crop_photos.py"


def crop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_crops_are_unscaled_pieces_of_each_photo(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    originals = {}
    for name, size in (("a", (96, 80)), ("b", (70, 120)), ("tiny", (20, 20))):
        rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(rgb).save(photos / f"{name}.png")
        originals[name] = rgb
    result = crop(str(photos), str(tmp_path / "crops"), "--size", "32", "--per-photo", "3", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "skipped tiny.png" in result.stderr
    files = sorted(p.name for p in (tmp_path / "crops").iterdir())
    assert files == [f"{n}_{k:02d}.png" for n in ("a", "b") for k in range(3)]
    for name in files:
        piece = np.asarray(Image.open(tmp_path / "crops" / name))
        source = originals[name.split("_")[0]]
        assert piece.shape == (32, 32, 3)
        # byte-identical to some 32² window of its photo: cropped, never resampled
        windows = np.lib.stride_tricks.sliding_window_view(source, (32, 32, 3))[..., 0, :, :, :]
        assert (windows == piece).all(axis=(-3, -2, -1)).any()
    again = crop(str(photos), str(tmp_path / "again"), "--size", "32", "--per-photo", "3", "--seed", "1")
    assert again.returncode == 0
    assert all((tmp_path / "again" / f).read_bytes() == (tmp_path / "crops" / f).read_bytes() for f in files)


def test_an_existing_target_is_refused_and_left_alone(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64)).save(photos / "x.png")
    target = tmp_path / "crops"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = crop(str(photos), str(target))
    assert result.returncode != 0 and "exists" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
