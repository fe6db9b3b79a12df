"""End-to-end seconds per inpainted image: the pipeline's fast path against the plain reference path.

    python bench/e2e_benchmark.py                # 512² default preset, 20 steps; then a 4000×3000 photo
    python bench/e2e_benchmark.py --parity       # also: official preset, fast vs reference outputs
    python bench/e2e_benchmark.py --compare default fast dpmpp-2m:8:0-0.5   # sampler settings side by side

Full-size networks with random (seeded) weights: the cost does not depend on the values. "reference" is
``MoebiusInpaintPipeline(..., fast=False)`` in fp32: no folding, no phase-split upsampling, the official
layer algorithms. "fast" is the default pipeline (``fast=True``) in ``--dtype`` (bf16 by default).

``--compare`` instead times the fast path alone at 512² for each given setting, interleaved over
``--repeats`` rounds (median reported): a preset name, or ``SCHEDULER:STEPS[:START-END]`` (the ``default``
preset with that scheduler, step count and guidance interval, as in bench/sampler_quality.py).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from moebius import MoebiusInpaintPipeline, create_model
from moebius.errors import MoebiusError
from moebius.models.vae import OFFICIAL_VAE_CONFIG, AutoencoderKL, VAEConfig
from moebius.pipeline.presets import InpaintPreset, get_preset, list_presets
from sampler_quality import parse_row

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "parity"


def _pipelines(dtype: torch.dtype, device: str = "cpu", preset: str = "moebius",
               vae_config: VAEConfig = OFFICIAL_VAE_CONFIG) -> tuple[MoebiusInpaintPipeline, MoebiusInpaintPipeline]:
    """(reference fp32, fast in ``dtype``) on ``device``, sharing the same random weights."""
    torch.manual_seed(0)
    unet, vae = create_model(preset).eval(), AutoencoderKL(vae_config).eval()
    reference = MoebiusInpaintPipeline(unet, vae, fast=False).to(device)
    fast = MoebiusInpaintPipeline(copy.deepcopy(unet), copy.deepcopy(vae), fast=True).to(device, dtype)
    for pipe in (reference, fast):
        pipe.set_progress_bar_config(disable=True)
    return reference, fast


def _timed(pipe: MoebiusInpaintPipeline, image: Image.Image, mask: Image.Image, **kwargs) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = pipe(image, mask, output_type="np", **kwargs)
    return time.perf_counter() - start, out.images[0]


def setting(text: str) -> InpaintPreset:
    """A preset name, or ``SCHEDULER:STEPS[:START-END]`` applied to the default preset."""
    if text in list_presets():
        return get_preset(text)
    row = parse_row(text)
    return get_preset("default").replace(name=row.label, scheduler=row.scheduler, num_inference_steps=row.steps,
                                         guidance_interval=row.interval)


def describe(preset: InpaintPreset) -> str:
    start, end = preset.guidance_interval
    guided = sum(preset.uses_guidance(i, preset.num_inference_steps) for i in range(preset.num_inference_steps))
    return (f"{preset.scheduler}, {preset.num_inference_steps} steps, guidance {preset.guidance_scale:g} on "
            f"{guided} of them" + ("" if (start, end) == (0.0, 1.0) else f" (interval {start:g}-{end:g})"))


def compare(fast: MoebiusInpaintPipeline, image: Image.Image, mask: Image.Image, settings: list[InpaintPreset],
            repeats: int) -> None:
    """Seconds per 512² image for each setting, the settings interleaved round by round."""
    times: dict[str, list[float]] = {s.name: [] for s in settings}
    for round_ in range(repeats):
        for preset in settings:
            times[preset.name].append(_timed(fast, image, mask, preset=preset, seed=0)[0])
            print(f"round {round_ + 1}: {preset.name} {times[preset.name][-1]:.1f} s", flush=True)  # survives a timeout
    print("| setting | what | seconds per 512² image | rounds |")
    print("|---|---|---|---|")
    for preset in settings:
        t = sorted(times[preset.name])
        print(f"| {preset.name} | {describe(preset)} | {t[len(t) // 2]:.1f} | {', '.join(f'{v:.1f}' for v in times[preset.name])} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--parity", action="store_true", help="also compare official-preset outputs (fp32 both)")
    parser.add_argument("--compare", nargs="+", metavar="SETTING",
                        help="time only the fast path for these presets or SCHEDULER:STEPS[:START-END] settings")
    parser.add_argument("--repeats", type=int, default=1, help="with --compare: interleaved rounds (default 1)")
    args = parser.parse_args()
    try:
        settings = [setting(text) for text in args.compare or []]
    except MoebiusError as exc:
        parser.error(str(exc))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    image = Image.open(SAMPLE / "test_image.png").convert("RGB")
    mask = Image.open(SAMPLE / "test_mask.png").convert("L")
    reference, fast = _pipelines(dtype)
    if settings:
        print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}; fast path, {args.dtype}, full-size "
              f"random weights, seed 0")
        _timed(fast, image.resize((256, 256)), mask.resize((256, 256)), num_inference_steps=1, seed=0)  # warm-up
        compare(fast, image, mask, settings, args.repeats)
        return

    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}; seconds per image, default preset, "
          f"{args.steps} steps")
    print("| case | reference fp32 | fast " + args.dtype + " | speed-up |")
    print("|---|---|---|---|")
    _timed(fast, image.resize((256, 256)), mask.resize((256, 256)), num_inference_steps=1, seed=0)  # warm-up
    ref_s, _ = _timed(reference, image, mask, num_inference_steps=args.steps, seed=0)
    fast_s, _ = _timed(fast, image, mask, num_inference_steps=args.steps, seed=0)
    print(f"| 512×512 | {ref_s:.1f} | {fast_s:.1f} | {ref_s / fast_s:.2f}× |", flush=True)

    # A 4000×3000 photo with a 160×120 hole: the crop strategy inpaints one 512² region around it.
    big = image.resize((4000, 3000), Image.BICUBIC)
    hole = np.zeros((3000, 4000), np.uint8)
    hole[1400:1520, 2000:2160] = 255
    big_s, _ = _timed(fast, big, Image.fromarray(hole), num_inference_steps=args.steps, seed=0)
    print(f"| 4000×3000, 160×120 hole (crop) | – | {big_s:.1f} | {big_s / fast_s:.2f}× the 512² time |", flush=True)

    if args.parity:
        fast32 = MoebiusInpaintPipeline(copy.deepcopy(reference.unet), copy.deepcopy(reference.vae), fast=True)
        fast32.set_progress_bar_config(disable=True)
        _, a = _timed(reference, image, mask, preset="official", seed=0)
        _, b = _timed(fast32, image, mask, preset="official", seed=0)
        diff = np.abs(a.astype(int) - b.astype(int))
        print(f"\nofficial preset, fp32, fast vs reference: max |diff| {diff.max()} levels, "
              f"{(diff > 0).mean() * 100:.3f} % of values differ")


if __name__ == "__main__":
    main()
