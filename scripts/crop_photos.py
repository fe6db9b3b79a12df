"""Random native-scale crops of a folder of photos, for training at a small size without downscaling.

    python scripts/crop_photos.py runs/small/photos runs/small/crops64 --size 64 --per-photo 16
    python scripts/crop_photos.py runs/small/photos runs/small/crops128 --size 128 --per-photo 4

``moebius train`` resizes every image's short side to ``data.resolution`` before cropping, so training the
small model at 64² on whole 256² photos would teach it textures four times coarser than those it fills at
256². Cropping first keeps the 256² scale. Crop positions are uniform and drawn from ``--seed``; crops are
PNG files named ``<photo>_<k>.png``. The output folder is written whole or not at all.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

from PIL import Image

from moebius.errors import MoebiusError
from moebius.mask_generators import list_images


def crop_folder(source: Path, target: Path, size: int, per_photo: int, seed: int) -> int:
    """Write ``per_photo`` random ``size``² crops of every photo in ``source`` into ``target``; -> count."""
    try:
        photos = list_images(source)  # what training reads from a folder
    except MoebiusError as error:
        raise SystemExit(f"error: {error}") from None
    if not photos:
        raise SystemExit(f"error: no photos in {source}")
    if target.exists():
        raise SystemExit(f"error: {target} exists; remove it or pick another folder")
    rng = random.Random(seed)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = 0
    for photo in photos:
        with Image.open(photo) as image:
            rgb = image.convert("RGB")
        if min(rgb.size) < size:
            print(f"skipped {photo.name}: smaller than {size} px", file=sys.stderr)
            continue
        for k in range(per_photo):
            x, y = rng.randint(0, rgb.width - size), rng.randint(0, rgb.height - size)
            rgb.crop((x, y, x + size, y + size)).save(tmp / f"{photo.stem}_{k:02d}.png")
            count += 1
    tmp.rename(target)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of photos")
    parser.add_argument("target", type=Path, help="new folder for the crops")
    parser.add_argument("--size", type=int, default=64, help="crop side in pixels (64)")
    parser.add_argument("--per-photo", type=int, default=16, help="crops per photo (16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.size < 8 or args.per_photo < 1:
        parser.error("--size must be >= 8 and --per-photo >= 1")
    print(f"{crop_folder(args.source, args.target, args.size, args.per_photo, args.seed)} crops in {args.target}")


if __name__ == "__main__":
    main()
