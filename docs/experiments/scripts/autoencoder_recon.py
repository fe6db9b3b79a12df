"""Reconstruction quality of autoencoders on the held-out photos (the photo benchmark's eval split).

    python docs/experiments/scripts/autoencoder_recon.py runs/small/kl/autoencoder/autoencoder \\
        runs/small/s2d/autoencoder/autoencoder

Each photo is loaded as the photo benchmark loads it (EXIF orientation, center square, Lanczos to ``--size``²), encoded to the
posterior mean and decoded; PSNR and SSIM are over the whole image, against the input. Prints one markdown
row per autoencoder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from moebius.eval.metrics import psnr, ssim
from moebius.eval.photos import default_photos_dir, held_out_photos
from moebius.eval.runner import load_rgb
from moebius.weights.vae import load_vae


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    y = vae.decode(vae.encode(x).mode())
    return ((y[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoders", nargs="+", type=Path, help="autoencoder folders (config.json + weights)")
    parser.add_argument("--photos-dir", type=Path, default=None)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    photos = [np.array(load_rgb(p, args.size)) for p in held_out_photos(args.photos_dir or default_photos_dir())]
    print(f"# {len(photos)} held-out photos at {args.size}²")
    print("| autoencoder | latent | PSNR dB | SSIM | s per image |\n|---|---|---|---|---|")
    for folder in args.autoencoders:
        vae = load_vae(folder).float().eval()
        start = time.perf_counter()
        outs = [reconstruct(vae, rgb) for rgb in photos]
        seconds = (time.perf_counter() - start) / len(photos)
        c, f = vae.config.latent_channels, vae.config.downsample_factor
        print(f"| {folder} | {c}×/{f} | {np.mean([psnr(o, p) for o, p in zip(outs, photos)]):.2f} | "
              f"{np.mean([ssim(o, p) for o, p in zip(outs, photos)]):.3f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
