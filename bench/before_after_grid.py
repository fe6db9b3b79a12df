"""A before/after picture from photo-benchmark runs: per row, the input with its hole, then every method.

    moebius eval --photos --mask-preset medium_256 --resolutions 256 --method telea --method navier-stokes \\
        --method biharmonic --save-predictions -o runs/eval/baselines
    moebius eval --photos --mask-preset medium_256 --resolutions 256 --method moebius --weights PIPELINE \\
        --save-predictions -o runs/eval/ours
    python bench/before_after_grid.py runs/eval/baselines runs/eval/ours --mask-preset medium_256 -o grid.png

Columns follow the order of the folders and, inside one, of the method names; rows are ``--rows`` samples that
every method predicted, spread evenly over the sorted names. The holes are regenerated from the same mask
preset and seed as the runs (pass the ones they used) and shown white on the input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from moebius.eval.masks import mask_source
from moebius.eval.photos import default_photos_dir, held_out_photos
from moebius.eval.runner import load_rgb

LABEL_HEIGHT = 18


def columns(runs: list[Path], resolution: int) -> list[tuple[str, Path]]:
    """(label, predictions folder) per method found under each run folder; labels made unique."""
    found = []
    for run in runs:
        for method in sorted(p for p in (run / str(resolution)).glob("*/predictions") if p.is_dir()):
            found.append((method.parent.name, method))
    if not found:
        raise SystemExit(f"error: no <run>/{resolution}/<method>/predictions/ under {', '.join(map(str, runs))} "
                         "(run moebius eval with --save-predictions)")
    names = [label for label, _ in found]
    return [(f"{label} ({folder.parents[2].name})" if names.count(label) > 1 else label, folder)
            for label, folder in found]


def pick_samples(cols: list[tuple[str, Path]], rows: int) -> list[str]:
    """``rows`` sample names predicted by every method, evenly spread over the sorted common names."""
    common = sorted(set.intersection(*({p.stem for p in folder.glob("*.png")} for _, folder in cols)))
    if not common:
        raise SystemExit("error: the runs share no predicted sample")
    index = np.linspace(0, len(common) - 1, min(rows, len(common))).round().astype(int)
    return [common[i] for i in dict.fromkeys(index)]


def grid(cols: list[tuple[str, Path]], samples: list[str], photos: dict[str, Path], resolution: int,
         preset: str, seed: int) -> Image.Image:
    """The picture: one row per sample, the masked input first, then one column per method."""
    masks = mask_source(preset, seed)
    side = resolution
    out = Image.new("RGB", ((len(cols) + 1) * side, LABEL_HEIGHT + len(samples) * side), "white")
    draw = ImageDraw.Draw(out)
    for c, label in enumerate(["input", *(label for label, _ in cols)]):
        draw.text((c * side + 4, 3), label, fill="black")
    for r, name in enumerate(samples):
        stem = name.rsplit("__m", 1)[0]
        truth = load_rgb(photos[stem], resolution)
        hole = np.asarray(masks(name, truth.size).convert("L")) > 127
        shown = np.asarray(truth).copy()
        shown[hole] = 255
        y = LABEL_HEIGHT + r * side
        out.paste(Image.fromarray(shown), (0, y))
        for c, (_, folder) in enumerate(cols, start=1):
            with Image.open(folder / f"{name}.png") as im:
                out.paste(im.convert("RGB").resize((side, side)), (c * side, y))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="moebius eval --photos output folders")
    parser.add_argument("--resolution", type=int, default=256, help="benchmark resolution (default 256)")
    parser.add_argument("--mask-preset", default="medium_256", help="the runs' --mask-preset (default medium_256)")
    parser.add_argument("--mask-seed", type=int, default=0, help="the runs' --mask-seed (default 0)")
    parser.add_argument("--rows", type=int, default=4, help="samples shown (default 4)")
    parser.add_argument("--photos-dir", type=Path, help="fetched photos (default: as moebius eval --photos)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write (must not exist)")
    args = parser.parse_args()
    if args.output.exists():
        raise SystemExit(f"error: {args.output} exists; choose another name")
    cols = columns(args.runs, args.resolution)
    samples = pick_samples(cols, args.rows)
    photos = {p.stem: p for p in held_out_photos(args.photos_dir or default_photos_dir())}
    picture = grid(cols, samples, photos, args.resolution, args.mask_preset, args.mask_seed)
    picture.save(args.output)
    print(f"wrote {args.output}: {len(samples)} rows × input + {', '.join(label for label, _ in cols)}")


if __name__ == "__main__":
    main()
