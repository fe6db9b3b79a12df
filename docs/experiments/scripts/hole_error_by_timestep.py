"""How well a denoiser recovers the hole at each noise level, against simply copying the masked-image latent.

    python docs/experiments/scripts/hole_error_by_timestep.py runs/small/kl/distill/pipeline \\
        runs/small/kl/plain/pipeline

For held-out photos (256² by default) with LaMa ``medium_256`` masks, each pipeline folder's U-Net sees the training
input [x_t | mask | z_masked] at several timesteps t (one fixed noise draw per photo), and the script
prints, per t:

* ``eps``: the ε-MSE (what an ε-predictor's training minimises; a v-predictor's ε̂ is derived from v̂), and
  ``eps hole`` the same inside the hole only, where the network has to infer content rather than read it
  from z_masked;
* ``x0 hole``: the MSE of the implied clean latent inside the hole, x̂0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ for an
  ε-predictor, √ᾱ·x_t − √(1−ᾱ)·v̂ for a v-predictor (the pipeline's ``scheduler.json`` says which);
* ``copy``: the same MSE for x̂0 = z_masked (the grey latent of the hole), the answer of a network that
  only learnt to copy its condition. A denoiser must beat ``copy`` at high t to inpaint from pure noise.

The ε loss hides the high-t regime: there x_t is nearly all noise, so ε̂ ≈ x_t / √(1−ᾱ) already scores
well whatever the network thinks the hole holds, while x̂0 multiplies ε̂'s error by (1−ᾱ)/ᾱ.

With two or more pipelines, a last table compares each with the first, photo by photo (same photos, masks and
noise): the mean difference of ``eps hole`` with a 95 % bootstrap interval over photos, and the share of
photos where it is lower. ``distill plain`` is the paper's ⑨ vs ⑩ ablation on the objective itself.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from moebius.eval.photos import default_photos_dir, held_out_photos
from moebius.eval.runner import load_rgb
from moebius.models.denoiser import BACKGROUND_IDS
from moebius.pipeline import MoebiusInpaintPipeline
from moebius.schedulers.ddim import DDIMConfig, scaled_linear_alphas_cumprod, split_prediction
from moebius.mask_generators import MaskGenerator


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipelines", nargs="+", help="pipeline folders (MoebiusInpaintPipeline.from_pretrained)")
    parser.add_argument("--photos", type=int, default=16, help="held-out photos used (default 16)")
    parser.add_argument("--resolution", type=int, default=256, help="square crop size (default 256)")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 200, 400, 600, 800, 900, 980])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paths = held_out_photos(default_photos_dir())[: args.photos]
    images = torch.stack([torch.from_numpy(np.array(load_rgb(p, args.resolution))).permute(2, 0, 1) for p in paths])
    images = images.float() / 127.5 - 1  # (N, 3, S, S)
    generator = MaskGenerator("medium_256")
    holes = torch.stack([torch.from_numpy(generator(args.resolution, args.resolution, np.random.default_rng(i)))[None]
                         for i in range(len(paths))]).float()  # (N, 1, S, S), 1 = hole
    alphas = scaled_linear_alphas_cumprod(DDIMConfig())
    print(f"# {len(paths)} held-out photos at {args.resolution}², medium_256 masks; latent MSE per element")
    per_photo: dict[str, dict[int, torch.Tensor]] = {}  # folder -> t -> (N,) eps-MSE inside each photo's hole
    for folder in args.pipelines:
        pipe = MoebiusInpaintPipeline.from_pretrained(folder)
        # Posterior means, as training encodes.
        z = pipe.vae.encode_latents(images, sample=False)
        z_masked = pipe.vae.encode_latents(images * (1 - holes), sample=False)
        mask = F.interpolate(holes, size=z.shape[-2:], mode="nearest")
        inside = mask.expand_as(z).bool()
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        ids = torch.tensor([BACKGROUND_IDS] * len(paths))
        per_photo[folder] = {}
        print(f"\n## {folder}\n\n| t | eps | eps hole | x0 hole | copy |\n|---|---|---|---|---|")
        for t in args.timesteps:
            a = alphas[t]
            x_t = a.sqrt() * z + (1 - a).sqrt() * noise
            steps = torch.full((len(paths),), t)
            out = torch.cat([pipe.unet(torch.cat([x, m, c], 1), s, i) for x, m, c, s, i in
                             zip(x_t.split(4), mask.split(4), z_masked.split(4), steps.split(4), ids.split(4))])
            x0, eps = split_prediction(out, x_t, a, pipe.scheduler_config.prediction_type)
            sq = (eps - noise).square()
            per_photo[folder][t] = (sq * inside).sum((1, 2, 3)) / inside.sum((1, 2, 3)).clamp(min=1)
            print(f"| {t} | {sq.mean():.4f} | {sq[inside].mean():.4f} "
                  f"| {(x0 - z)[inside].square().mean():.3f} "
                  f"| {(z_masked - z)[inside].square().mean():.3f} |", flush=True)
    if len(args.pipelines) > 1:
        compare(per_photo, args.pipelines, args.timesteps)


def compare(per_photo: dict[str, dict[int, torch.Tensor]], folders: list[str], timesteps: list[int]) -> None:
    """Print each pipeline's per-photo ``eps hole`` against the first's: mean difference, 95 % CI, share lower."""
    base = folders[0]
    rng = np.random.default_rng(0)
    print(f"\n## eps hole against {base}, per photo (negative: lower than {base})\n")
    print("| pipeline | t | mean difference | 95 % bootstrap interval | relative | photos lower |\n|---|---|---|---|---|---|")
    for folder in folders[1:]:
        for t in timesteps:
            ref, other = per_photo[base][t].numpy(), per_photo[folder][t].numpy()
            d = other - ref
            means = d[rng.integers(0, len(d), (5000, len(d)))].mean(1)
            lo, hi = np.percentile(means, [2.5, 97.5])
            print(f"| {folder} | {t} | {d.mean():+.4f} | [{lo:+.4f}, {hi:+.4f}] | {d.mean() / ref.mean():+.1%} "
                  f"| {(d < 0).sum()} of {len(d)} |", flush=True)


if __name__ == "__main__":
    main()
