"""How much an autoencoder costs an inpainting model before the model does anything: a classical fill passed
through the autoencoder, on the photo benchmark, next to the fill itself.

    python docs/experiments/scripts/autoencoder_ceiling.py runs/small/kl/autoencoder/autoencoder \\
        --fill telea --resolution 256

For each autoencoder the fill is encoded to its posterior mean, decoded, and pasted back the way the pipeline
pastes (every pixel outside the hole and its feather band kept; the default preset's feather radius). A
latent-diffusion model can only beat the classical fill on the benchmark's metrics if its own fill is better
than the classical one by more than this round trip loses; a lossless autoencoder (space-to-depth) scores
exactly the fill's numbers. Reports go to ``--output`` (``photos_summary.md`` is the table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autoencoder_recon import reconstruct  # this folder is on sys.path when one of its scripts runs
from moebius.errors import MoebiusError
from moebius.eval.baselines import describe, get_method
from moebius.eval.masks import mask_source
from moebius.eval.photos import run_photo_benchmark
from moebius.eval.runner import EvalConfig
from moebius.pipeline import blend, masks
from moebius.weights.vae import load_vae
from moebius.pipeline.presets import get_preset


def round_trip_fill(fill_name: str, vae: torch.nn.Module, feather: float):
    """``(image, mask) -> image``: the classical fill, through ``vae`` and back, pasted over ``image``."""
    fill = get_method(fill_name)

    def inpaint(image: Image.Image, mask: Image.Image) -> Image.Image:
        original = np.asarray(image.convert("RGB"))
        decoded = reconstruct(vae, np.array(fill(image, mask).convert("RGB")))  # writable: from_numpy
        hole = masks.binarize(np.asarray(mask.convert("L")))
        return Image.fromarray(blend.paste_keep_unmasked(decoded, original, masks.feather_alpha(hole, feather)))

    return inpaint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoders", nargs="+", type=Path, help="autoencoder folders (config.json + weights)")
    parser.add_argument("--fill", default="telea", choices=("telea", "navier-stokes", "biharmonic"))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--mask-preset", default="medium_256")
    parser.add_argument("--photos-dir", type=Path, default=None)
    parser.add_argument("--feather", type=float, default=None,
                        help="paste feather radius in pixels (default: the default preset's mask_blur)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (a marked subset)")
    parser.add_argument("--output", "-o", type=Path, default=Path("runs/autoencoder_ceiling"))
    args = parser.parse_args()

    feather = get_preset("default").mask_blur if args.feather is None else args.feather
    names = {f"{args.fill}+ae{i}": folder for i, folder in enumerate(args.autoencoders)}
    vaes = {name: load_vae(folder).float().eval() for name, folder in names.items()}  # bad folders fail first

    def make_method(name: str):
        if name == args.fill:
            return get_method(name), describe(name)
        details = f"{describe(args.fill)}, through {names[name]}, pasted with feather {feather}"
        return round_trip_fill(args.fill, vaes[name], feather), details

    run_photo_benchmark(args.output, [args.fill, *names], [args.resolution], photos_dir=args.photos_dir,
                        limit=args.limit, mask_source=mask_source(args.mask_preset, 0),
                        config=EvalConfig(metrics=("kid", "lpips", "psnr", "ssim")), make_method=make_method)
    for name, folder in names.items():
        print(f"{name}: {folder}")
    print((args.output / "photos_summary.md").read_text())


if __name__ == "__main__":
    try:
        main()
    except MoebiusError as exc:  # a missing folder or photo set: one line, no traceback
        sys.exit(f"error: {exc}")
