"""The offline photo benchmark: real photographs that Debian packages ship, held out from training.

The photos come from ``fetch_real_photos.sh OUT_DIR`` (the project's shared data scripts; ``apt-get
download``, about 25 s): ``OUT_DIR/manifest.csv`` lists every file with its ``split`` (``train``, ``eval``
or ``faces``, decided by a stable hash of the name) and SHA-256. This benchmark uses the ``eval`` split
only (49 photos in the reference fetch), each center-cropped and resized to 256² and 512², with
``masks_per_image`` masks per photo from :class:`~moebius.eval.masks.GeneratedMasks` (preset ``mixed``,
seed 0, a spread of hole areas from 2% to 62%). Mask ``j`` of photo ``stem`` is keyed ``stem__m{j}``, so
the masks never change when photos are added or removed, and the 256² mask is the 512² one downscaled.

Results per (resolution, method) go to ``out/<res>/<method>/`` as full reports (:mod:`runner`), and one
table over all of them to ``out/photos_summary.md`` and ``.json``. With ~100 pairs, FID is noisy and
biased; read KID and the paired hole metrics first.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from .masks import GeneratedMasks, MaskSource
from .methods import MethodFactory, method_factory
from .report import markdown_table
from .runner import Backends, EvalConfig, Sample, evaluate

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("telea", "navier-stokes", "biharmonic")
DEFAULT_RESOLUTIONS = (256, 512)
SPLIT = "eval"


def default_photos_dir() -> Path:
    """``$MOEBIUS_PHOTOS``, else ``~/.cache/moebius/real_photos``."""
    env = os.environ.get("MOEBIUS_PHOTOS")
    if env:
        return Path(env).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "moebius" / "real_photos"


def held_out_photos(photos_dir: Path, verify: bool = True) -> list[Path]:
    """The ``eval``-split files of ``manifest.csv``, sorted by name; checks they exist (and their SHA-256)."""
    manifest = Path(photos_dir) / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"no manifest.csv in {photos_dir}: fetch the photos first with "
                         f"`bash scripts/fetch_real_photos.sh {photos_dir}` (or pass --photos-dir)")
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split") == SPLIT]
    if not rows:
        raise InputError(f"{manifest} lists no '{SPLIT}' photos")
    paths, bad = [], []
    for r in sorted(rows, key=lambda r: r["file"]):
        p = Path(photos_dir) / r["file"]
        if not p.is_file():
            bad.append(f"{r['file']} (missing)")
        elif verify and r.get("sha256") and hashlib.sha256(p.read_bytes()).hexdigest() != r["sha256"]:
            bad.append(f"{r['file']} (sha256 differs from the manifest)")
        else:
            paths.append(p)
    if bad:
        raise InputError(f"{len(bad)} held-out photo(s) do not match {manifest}: {', '.join(bad[:5])}")
    return paths


def photo_samples(paths: Sequence[Path], masks_per_image: int) -> list[Sample]:
    """One sample per (photo, mask index), named ``stem__m{j}``."""
    return [Sample(f"{p.stem}__m{j}", p) for p in paths for j in range(masks_per_image)]


def run_photo_benchmark(out_dir: Path, methods: Sequence[str] = DEFAULT_METHODS,
                        resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, *, photos_dir: Path | None = None,
                        masks_per_image: int = 2, limit: int | None = None, mask_source: MaskSource | None = None,
                        config: EvalConfig | None = None,
                        make_method: MethodFactory | None = None) -> dict:
    """Run every method at every resolution on the held-out photos; write the reports and the summary table.

    Args:
        out_dir: where ``<res>/<method>/`` reports and ``photos_summary.{md,json}`` go.
        methods: baseline names (:mod:`baselines`) or names ``make_method`` understands.
        resolutions: square sizes. photos_dir: default :func:`default_photos_dir`.
        masks_per_image: masks per photo. limit: use only the first ``limit`` photos (a marked subset).
        mask_source: replaces the default ``GeneratedMasks("mixed", seed=0)``.
        config: metric settings (``resolution`` and ``min_images`` are set here).
        make_method: ``name -> (inpainter, description)``; default: the baselines.
    """
    photos_dir = Path(photos_dir) if photos_dir else default_photos_dir()
    paths = held_out_photos(photos_dir)
    full = len(paths) * masks_per_image
    if limit is not None:
        paths = paths[:limit]
    samples = photo_samples(paths, masks_per_image)
    masks = mask_source or GeneratedMasks("mixed", seed=0)
    base = config or EvalConfig()
    make_method = make_method or method_factory()
    backends = Backends()
    results = []
    for res in resolutions:
        for name in methods:
            inpainter, details = make_method(name)
            cfg = replace(base, resolution=res, min_images=full, allow_subset=base.allow_subset or limit is not None)
            title = f"Offline photo benchmark {res}²"
            logger.info("%s: %s on %d pairs", title, name, len(samples))
            report = evaluate(samples, masks, Path(out_dir) / str(res) / name, cfg, inpainter=inpainter,
                              method=name, method_details=details, backends=backends, title=title,
                              extra={"photos": {"dir": str(photos_dir), "split": SPLIT, "photos": len(paths),
                                                "masks_per_image": masks_per_image}})
            results.append({"resolution": res, "method": name, "details": details, "subset": report["subset"],
                            "seconds": report["seconds"], "summary": report["summary"]["all"],
                            "backends": report["backends"], "warnings": report["warnings"]})
    summary = {"photos_dir": str(photos_dir), "photos": len(paths), "masks_per_image": masks_per_image,
               "pairs": len(samples), "masks": masks.description, "results": results}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "photos_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (Path(out_dir) / "photos_summary.md").write_text(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    """The README table: one row per (resolution, method), then the backends and caveats."""
    rows = [(f"{r['method']} @ {r['resolution']}²" + (" (subset)" if r["subset"] else ""), r["summary"])
            for r in summary["results"]]
    first = summary["results"][0] if summary["results"] else {"backends": {}, "warnings": []}
    lines = [f"Offline photo benchmark: {summary['photos']} held-out photos x {summary['masks_per_image']} masks "
             f"= {summary['pairs']} pairs; masks: {summary['masks']}.", "",
             markdown_table("method", rows), "", "Backends:"]
    lines += [f"- **{k}**: {v}" for k, v in first["backends"].items()]
    lines += [f"- note: {w}" for w in first["warnings"] if not w.startswith("subset")]
    seconds = ", ".join(f"{r['method']}@{r['resolution']}: {r['seconds']['method']:.0f}/{r['seconds']['total']:.0f}"
                        for r in summary["results"])
    lines += ["", f"Seconds per method (inpainting only / whole run): {seconds}", ""]
    return "\n".join(lines)
