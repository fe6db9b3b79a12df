"""Sampler quality against cost: which scheduler, step count and guidance interval to run.

    bash scripts/fetch_real_photos.sh ~/.cache/moebius/real_photos       # once
    python bench/sampler_quality.py path/to/Moebius --photos ~/.cache/moebius/real_photos

For every row of the grid (scheduler, steps, guidance interval) it inpaints the same held-out photos and
masks, from the same noise (seed = the pair's index), and reports:

* seconds per image (median of the pair timings, one warm-up call first);
* closeness to the reference, a 50-step DDIM run with guidance at every step from the same noise: PSNR
  and ST-LPIPS (AlexNet, the photo benchmark's) inside the hole, the LPIPS layers averaged over the hole
  only. How far a fast sampler moves away from what the slow one would have painted;
* the photo benchmark's metrics against the ground truth (``moebius eval --photos``): PSNR and SSIM inside
  the hole, ST-LPIPS over the image, and KID and FID (Inception) unless ``--metrics`` leaves them out.

Photos and masks are the photo benchmark's: the ``eval`` split of the fetched photos (sorted by name, the
first ``--limit``), centre-cropped and resized to ``--resolution``², ``--masks-per-image`` masks each from
``moebius.eval.masks`` (preset ``--mask-preset``, seed 0). ``--short-side S`` first resizes each photo to
a short side of S and centre-crops ``--resolution``² at that scale (a model trained on crops at native
scale sees what it was trained on). Every call uses the ``default`` preset (pure noise start, guidance
2.5 unless ``--guidance``) with the row's scheduler, steps and interval; the weights folder's own call
defaults are not applied. Rows are ``SCHEDULER:STEPS`` or ``SCHEDULER:STEPS:START-END`` (``--rows``).

Prints a Markdown table; ``--out DIR`` also keeps each row's evaluation report (and ``--save-predictions``
its images). ``--quick`` is a smoke run: 2 photos at 64², four short rows against an 8-step reference,
no Inception metrics.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from moebius import MoebiusInpaintPipeline
from moebius.errors import InputError, MoebiusError
from moebius.eval import metrics as M
from moebius.eval.masks import mask_source
from moebius.eval.photos import default_photos_dir, held_out_photos, photo_samples
from moebius.eval.runner import ALL_METRICS, Backends, EvalConfig, evaluate, load_backends
from moebius.pipeline.presets import InpaintPreset, get_preset
from moebius.schedulers.registry import SCHEDULER_NAMES

FULL = (0.0, 1.0)
FIRST_HALF = (0.0, 0.5)
# (scheduler, steps): 20-step DDIM is the default preset; each runs with guidance at every step and on the
# first half of the steps only.
DEFAULT_PAIRS = (("ddim", 20), ("ddim", 10), ("dpmpp-2m", 8), ("dpmpp-2m", 10), ("dpmpp-2m", 12),
                 ("dpmpp-2m-karras", 8), ("dpmpp-2m-karras", 10), ("unipc", 8), ("unipc", 10))
REFERENCE = "ddim:50"
QUICK_ROWS = ("ddim:4", "ddim:4:0-0.5", "dpmpp-2m:3", "unipc:3:0-0.5")
QUICK_REFERENCE = "ddim:8"


class Row(NamedTuple):
    """One sampler setting of the grid."""

    scheduler: str
    steps: int
    interval: tuple[float, float] = FULL

    @property
    def label(self) -> str:
        start, end = self.interval
        return f"{self.scheduler}:{self.steps}" + ("" if self.interval == FULL else f":{start:g}-{end:g}")

    def settings(self, base: InpaintPreset) -> InpaintPreset:
        return base.replace(scheduler=self.scheduler, num_inference_steps=self.steps, guidance_interval=self.interval)

    def guided_steps(self, base: InpaintPreset) -> int:
        settings = self.settings(base)
        return sum(settings.uses_guidance(i, self.steps) for i in range(self.steps))


def parse_row(text: str) -> Row:
    """``"dpmpp-2m:8"`` or ``"dpmpp-2m:8:0-0.5"`` -> a :class:`Row`; anything else is an InputError."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in SCHEDULER_NAMES:
        raise InputError(f"row {text!r}: expected SCHEDULER:STEPS[:START-END] with SCHEDULER one of "
                         f"{', '.join(SCHEDULER_NAMES)}")
    try:
        steps = int(parts[1])
        interval = tuple(float(v) for v in parts[2].split("-")) if len(parts) == 3 else FULL
    except ValueError:
        raise InputError(f"row {text!r}: STEPS must be an integer and START-END two numbers, e.g. 0-0.5") from None
    if steps < 1 or len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
        raise InputError(f"row {text!r}: needs STEPS >= 1 and 0 <= START <= END <= 1")
    return Row(parts[0], steps, interval)


def default_rows() -> list[Row]:
    return [Row(s, n, interval) for s, n in DEFAULT_PAIRS for interval in (FULL, FIRST_HALF)]


def prepare_photos(paths: list[Path], folder: Path, resolution: int, short_side: int | None) -> list[Path]:
    """With ``short_side``: each photo at that short side, centre-cropped to ``resolution``², as PNG files in
    ``folder`` (the benchmark then uses them as they are). Without: the photos themselves."""
    if short_side is None:
        return paths
    if short_side < resolution:
        raise InputError(f"--short-side {short_side} is below --resolution {resolution}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        with Image.open(p) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        k = short_side / min(image.size)
        image = image.resize((max(short_side, round(image.width * k)), max(short_side, round(image.height * k))),
                             Image.LANCZOS)
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
        target = folder / f"{p.stem}.png"
        image.crop((left, top, left + resolution, top + resolution)).save(target)
        out.append(target)
    return out


class RecordingInpainter:
    """The pipeline with one row's settings, called by the benchmark runner pair by pair (seed = pair index);
    keeps every output and its wall time."""

    def __init__(self, pipe: MoebiusInpaintPipeline, settings: InpaintPreset) -> None:
        self.pipe, self.settings = pipe, settings
        self.outputs: list[np.ndarray] = []
        self.seconds: list[float] = []

    def __call__(self, image: Image.Image, mask: Image.Image) -> Image.Image:
        start = time.perf_counter()
        out = self.pipe(image, mask, preset=self.settings, seed=len(self.outputs), output_type="np").images[0]
        self.seconds.append(time.perf_counter() - start)
        self.outputs.append(out)
        return Image.fromarray(out)


def hole_closeness(outputs: list[np.ndarray], reference: list[np.ndarray], holes: list[np.ndarray],
                   lpips: torch.nn.Module | None) -> tuple[float, float | None]:
    """Mean PSNR (dB, capped at 100 per pair) and mean ST-LPIPS inside the hole of ``outputs`` against ``reference``."""
    psnrs, distances = [], []
    for out, ref, hole in zip(outputs, reference, holes):
        psnrs.append(min(M.psnr(ref, out, hole), 100.0))
        if lpips is not None:
            def to_t(a: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float().div(127.5).sub(1)

            with torch.inference_mode():
                weight = torch.from_numpy(hole.astype(np.float32))[None, None]
                distances.append(float(lpips(to_t(ref), to_t(out), weight)[0]))
    return float(np.mean(psnrs)), (float(np.mean(distances)) if distances else None)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value * scale, spec)


def run(weights: str, *, photos_dir: Path | None = None, rows: list[Row] | None = None,
        reference: Row | None = None, limit: int = 32, masks_per_image: int = 1, resolution: int = 512,
        short_side: int | None = None, mask_preset: str = "mixed", guidance: float | None = None,
        metrics: tuple[str, ...] = ALL_METRICS, dtype: str = "fp32", out_dir: Path | None = None,
        save_predictions: bool = False) -> dict:
    """Run the grid; -> ``{"rows": [...], "reference": {...}, "pairs": n, "markdown": table}``."""
    rows = rows if rows is not None else default_rows()
    reference = reference or parse_row(REFERENCE)
    pipe = MoebiusInpaintPipeline.from_pretrained(weights, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    pipe.set_progress_bar_config(disable=True)
    base = get_preset("default").replace(guidance_scale=guidance)
    photos_dir = Path(photos_dir) if photos_dir else default_photos_dir()
    paths = held_out_photos(photos_dir)[:limit]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(out_dir) if out_dir else Path(scratch)
        images = prepare_photos(paths, work / "photos", resolution, short_side)
        samples = photo_samples(images, masks_per_image)
        masks = mask_source(mask_preset)
        config = EvalConfig(metrics=metrics, resolution=None if short_side else resolution, allow_subset=True,
                            save_predictions=save_predictions)
        backends = load_backends(config, Backends())
        warm = RecordingInpainter(pipe, Row(reference.scheduler, 2).settings(base))  # first-call costs stay out of the timings
        size = (resolution, resolution)
        warm(Image.new("RGB", size, (127, 127, 127)), masks("warm-up", size).convert("L"))

        def evaluate_row(row: Row, name: str) -> tuple[RecordingInpainter, dict]:
            inpainter = RecordingInpainter(pipe, row.settings(base))
            report = evaluate(samples, masks, work / "reports" / name, config, inpainter=inpainter,
                              method=f"moebius {row.label}", backends=backends, title=f"sampler quality {row.label}")
            return inpainter, report

        ref_run, ref_report = evaluate_row(reference, "reference_" + reference.label.replace(":", "_"))
        holes = [np.asarray(masks(s.name, (o.shape[1], o.shape[0])).convert("L")) >= 128
                 for s, o in zip(samples, ref_run.outputs)]
        results = []
        for row in [reference, *rows]:
            if row == reference:
                run_, report = ref_run, ref_report
            else:
                run_, report = evaluate_row(row, row.label.replace(":", "_"))
            psnr_ref, lpips_ref = hole_closeness(run_.outputs, ref_run.outputs, holes, backends.lpips)
            results.append({"row": row.label, "scheduler": row.scheduler, "steps": row.steps,
                            "guidance_interval": list(row.interval), "guided_steps": row.guided_steps(base),
                            "seconds": statistics.median(run_.seconds), "psnr_hole_vs_reference": psnr_ref,
                            "lpips_hole_vs_reference": lpips_ref, "is_reference": row == reference,
                            "summary": report["summary"]["all"]})
            logging.info("%s: %.2f s/image, hole PSNR %.2f dB and ST-LPIPS %s against the reference", row.label,
                         results[-1]["seconds"], psnr_ref, _fmt(lpips_ref, ".4f"))  # kept if a run is cut short
    table = markdown(results, reference, len(samples), resolution, base.guidance_scale)
    return {"rows": results, "pairs": len(samples), "markdown": table}


def markdown(results: list[dict], reference: Row, pairs: int, resolution: int, guidance: float) -> str:
    head = (f"{pairs} pairs at {resolution}², guidance {guidance:g}; closeness is to {reference.label} "
            "(guidance at every step) from the same noise, inside the hole; ground-truth metrics as "
            "`moebius eval --photos`.\n\n"
            "| sampler:steps[:CFG interval] | U-Net rows (steps + CFG steps) | s / image | PSNR hole vs ref | "
            "ST-LPIPS hole vs ref | PSNR hole | SSIM hole | ST-LPIPS | KID×10³ | FID |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results:
        s = r["summary"]
        label = r["row"] + (" (reference)" if r["is_reference"] else "")
        closeness = ("–", "–") if r["is_reference"] else (_fmt(r["psnr_hole_vs_reference"], ".2f"),
                                                           _fmt(r["lpips_hole_vs_reference"], ".4f"))
        lines.append(f"| {label} | {r['steps']} + {r['guided_steps']} | {r['seconds']:.2f} | {closeness[0]} | "
                     f"{closeness[1]} | {_fmt(s.get('psnr_hole'), '.2f')} | {_fmt(s.get('ssim_hole'), '.3f')} | "
                     f"{_fmt(s.get('lpips'), '.4f')} | {_fmt(s.get('kid'), '.2f', 1e3)} | {_fmt(s.get('fid'), '.1f')} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sampler_quality", description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a weights folder (official layout or ours)")
    parser.add_argument("--photos", metavar="DIR", help="fetched photos (default $MOEBIUS_PHOTOS or "
                                                        "~/.cache/moebius/real_photos)")
    parser.add_argument("--rows", nargs="+", metavar="ROW",
                        help="SCHEDULER:STEPS[:START-END] each (default: the grid in this script's docstring)")
    parser.add_argument("--reference", default=REFERENCE, metavar="ROW", help=f"default {REFERENCE}")
    parser.add_argument("--limit", type=int, default=32, help="held-out photos used (default 32)")
    parser.add_argument("--masks-per-image", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--short-side", type=int, metavar="S", help="crop at this photo scale instead of resizing")
    parser.add_argument("--mask-preset", default="mixed")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the default preset's)")
    parser.add_argument("--metrics", nargs="+", choices=ALL_METRICS, default=None,
                        help="ground-truth metrics (default: fid kid psnr ssim lpips)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="keep the per-row reports here")
    parser.add_argument("--save-predictions", action="store_true", help="with --out: keep every output image")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 photos at 64², four short rows")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        rows = [parse_row(r) for r in args.rows] if args.rows else None
        metrics = tuple(args.metrics) if args.metrics else ALL_METRICS
        limit, resolution, reference = args.limit, args.resolution, args.reference
        if args.quick:
            rows = rows or [parse_row(r) for r in QUICK_ROWS]
            limit, resolution = min(limit, 2), 64
            reference = QUICK_REFERENCE if reference == REFERENCE else reference
            metrics = tuple(m for m in metrics if m in ("psnr", "ssim", "lpips"))
        if limit < 1 or args.masks_per_image < 1 or resolution < 32:
            raise InputError("--limit and --masks-per-image must be >= 1 and --resolution >= 32")
        result = run(args.weights, photos_dir=Path(args.photos) if args.photos else None, rows=rows,
                     reference=parse_row(reference), limit=limit, masks_per_image=args.masks_per_image,
                     resolution=resolution, short_side=args.short_side, mask_preset=args.mask_preset,
                     guidance=args.guidance, metrics=metrics, dtype=args.dtype, out_dir=args.out,
                     save_predictions=args.save_predictions)
    except MoebiusError as exc:
        print(f"sampler_quality: error: {exc}", file=sys.stderr)
        return 2
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}, {args.dtype}, weights {args.weights}")
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
