"""Score an inpainting method on a set of images: pairing, metrics, mask-area bins, and the report files.

:func:`evaluate` takes ground-truth images, a mask source (:mod:`moebius.eval.masks`) and either a folder
of predictions or an *inpainter* (``(image: PIL RGB, mask: PIL L) -> PIL RGB``, e.g. a baseline from
:mod:`moebius.eval.baselines` or a wrapped pipeline). It writes into ``out_dir``:

* ``report.json``: settings, every backend behind a number (file digests, library versions), warnings,
  the summary (all images and each mask-area bin) and every per-image row;
* ``per_image.csv`` and ``summary.csv``; ``summary.md`` (tables); ``metrics_by_bin.png`` (if matplotlib).

Rules: images and predictions pair by file stem, and any missing or extra file is an
error listing the names; FID/KID/IDS on fewer images than the benchmark declares is refused unless
``allow_subset``, and the report then says it is a subset; an inpainter never sees the hole's pixels
(they are set to grey before the call). Paired metrics and LPIPS are per image, then averaged; FID, KID
and IDS are computed over the whole set and again within each bin of at least ``min_bin_images`` pairs
(50 by default; below that their sampling noise swamps any difference).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import InputError
from ..image_files import list_image_files
from . import metrics as M
from .masks import MaskSource
from .report import markdown_table, write_report  # noqa: F401 (markdown_table: re-exported)

logger = logging.getLogger(__name__)

Inpainter = Callable[[Image.Image, Image.Image], Image.Image]

PAIRED = ("psnr", "ssim", "l1", "lpips")
DISTRIBUTION = ("fid", "kid", "ids")
ALL_METRICS = DISTRIBUTION + PAIRED
BINS = {"lama": np.linspace(0, 1, 11), "comodgan": np.linspace(0, 1, 6), "none": np.array([0.0, 1.0])}
HOLE_FILL = 127  # what an inpainter sees inside the hole
PSNR_CAP = 100.0  # dB; identical images (PSNR inf) count as this in averages


@dataclass
class EvalConfig:
    """Everything that changes a number, recorded in the report."""

    metrics: tuple[str, ...] = ALL_METRICS
    resolution: int | None = None  # center square crop + Lanczos resize of the ground truth; None = as is
    bins: str = "lama"
    min_images: int = 0  # FID/KID/IDS need at least this many pairs unless allow_subset
    allow_subset: bool = False
    fid_weights: str | None = None
    fid_resize: str = "tf-legacy"
    lpips_net: str = "alex"
    lpips_variant: str = "shift-tolerant"
    lpips_weights: str | None = None
    lpips_backbone: str | None = None
    lpips_head: str | None = None
    min_bin_images: int = 50  # FID/KID/IDS inside a mask-area bin only from this many pairs (noise below)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    device: str = "cpu"
    save_predictions: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(ALL_METRICS))
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(ALL_METRICS)}")
        if self.bins not in BINS:
            raise InputError(f"unknown bins {self.bins!r}; choose from {', '.join(BINS)}")


@dataclass
class Sample:
    """One ground-truth image to score: its stem and path (and the prediction's path, if from a folder)."""

    name: str
    image: Path
    prediction: Path | None = None


@dataclass
class Backends:
    """The feature networks, loaded once and shared by every run of a session."""

    inception: Any = None
    lpips: Any = None
    real_features: dict[tuple[str, int | None], np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Pairing


def list_images(folder: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Images in ``folder`` by stem (sorted); duplicates are an error; ``names`` restricts and must all exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    found: dict[str, Path] = {}
    for p in list_image_files(folder):
        if p.stem in found:
            raise InputError(f"two images share the name {p.stem!r} in {folder}: {found[p.stem].name}, {p.name}")
        found[p.stem] = p
    if names is not None:
        missing = [n for n in names if n not in found]
        if missing:
            raise InputError(f"{len(missing)} listed image(s) missing from {folder}: {_few(missing)}")
        found = {n: found[n] for n in names}
    if not found:
        raise InputError(f"no images in {folder}")
    return found


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def pair_samples(images: dict[str, Path], predictions: Path | None) -> list[Sample]:
    """Pair ground truth with prediction files by stem; fail listing every missing and extra name."""
    if predictions is None:
        return [Sample(n, p) for n, p in images.items()]
    preds = list_images(predictions)
    missing = [n for n in images if n not in preds]
    extra = [n for n in preds if n not in images]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) have no prediction in {predictions}: {_few(missing)}")
        if extra:
            parts.append(f"{len(extra)} prediction(s) have no ground truth: {_few(extra)}")
        raise InputError("; ".join(parts))
    return [Sample(n, p, preds[n]) for n, p in images.items()]


# ---------------------------------------------------------------------------------------------------------
# Images


def load_rgb(path: Path, resolution: int | None = None) -> Image.Image:
    """Decode (EXIF orientation applied) to RGB; with ``resolution``, center-crop the short side and resize."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    if resolution is None:
        return im
    w, h = im.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return im.resize((resolution, resolution), Image.LANCZOS, box=box)


def bin_index(area: float, edges: np.ndarray) -> int:
    """Which ``[edges[i], edges[i+1])`` holds ``area`` (the last bin includes 1.0)."""
    return int(min(np.searchsorted(edges, area, side="right") - 1, len(edges) - 2))


def bin_label(edges: np.ndarray, i: int) -> str:
    return f"{edges[i] * 100:.0f}-{edges[i + 1] * 100:.0f}%"


# ---------------------------------------------------------------------------------------------------------
# The run


def check_subset(n: int, config: EvalConfig, what: str) -> bool:
    """Refuse distribution metrics on fewer than ``config.min_images`` pairs unless allowed; True if a subset."""
    wants = [m for m in DISTRIBUTION if m in config.metrics]
    if not wants or n >= config.min_images:
        return False
    if not config.allow_subset:
        raise InputError(
            f"{what} needs {config.min_images} images for {'/'.join(m.upper() for m in wants)}, got {n}: these "
            "statistics are biased by the number of images (FID falls as N grows; MAT#63), so a smaller set "
            "gives numbers that cannot be compared with published ones. Pass --allow-subset to compute them "
            "anyway (the report is then marked as a subset), or drop them with --metrics")
    return True


def load_backends(config: EvalConfig, backends: Backends | None = None) -> Backends:
    """Load the Inception and LPIPS networks the configured metrics need (once; reused if given)."""
    backends = backends or Backends()
    if backends.inception is None and any(m in config.metrics for m in DISTRIBUTION):
        from .features import InceptionFeatures

        backends.inception = InceptionFeatures(config.fid_weights, resize=config.fid_resize, device=config.device)
    if backends.lpips is None and "lpips" in config.metrics:
        from ..perceptual.lpips import load_lpips

        backends.lpips = load_lpips(config.lpips_net, config.lpips_variant, weights=config.lpips_weights,
                                    backbone=config.lpips_backbone, head=config.lpips_head).to(config.device)
    return backends


def evaluate(samples: list[Sample], masks: MaskSource, out_dir: Path, config: EvalConfig, *,
             inpainter: Inpainter | None = None, method: str = "predictions", method_details: str = "",
             backends: Backends | None = None, title: str = "", extra: dict | None = None) -> dict:
    """Score ``samples`` (predictions from files, or from ``inpainter``) and write the report files.

    Returns the report dict (the content of ``report.json``).
    """
    if (inpainter is None) == any(s.prediction is None for s in samples):
        raise InputError("give either a predictions folder or a method to run, not both or neither")
    subset = check_subset(len(samples), config, title or "this evaluation")
    backends = load_backends(config, backends)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_dir = out_dir / "predictions"
    if config.save_predictions:
        pred_dir.mkdir(exist_ok=True)
    edges = BINS[config.bins]
    rows, real_feats, fake_feats = [], [], []
    started = time.perf_counter()
    method_seconds = 0.0
    for k, s in enumerate(samples):
        gt = load_rgb(s.image, config.resolution)
        mask = masks(s.name, gt.size)
        hole = np.asarray(mask.convert("L")) >= 128
        gt_np = np.asarray(gt)
        if s.prediction is not None:
            pred = load_rgb(s.prediction)
        else:
            shown = gt_np.copy()
            shown[hole] = HOLE_FILL
            t0 = time.perf_counter()
            pred = inpainter(Image.fromarray(shown), mask.convert("L")).convert("RGB")
            method_seconds += time.perf_counter() - t0
        if pred.size != gt.size:
            raise InputError(f"{s.name}: prediction is {pred.size[0]}x{pred.size[1]}, ground truth "
                             f"{gt.size[0]}x{gt.size[1]}" + (f" (after resizing to {config.resolution}²)" if config.resolution else ""))
        if config.save_predictions:
            pred.save(pred_dir / f"{s.name}.png")
        pred_np = np.asarray(pred)
        try:
            row = _paired_row(s.name, gt_np, pred_np, hole, config, backends, edges)
        except ValueError as exc:  # e.g. an image smaller than the SSIM window
            raise InputError(f"{s.name}: {exc}") from None
        rows.append(row)
        if backends.inception is not None:
            key = (str(s.image), config.resolution)
            if key not in backends.real_features:
                backends.real_features[key] = backends.inception([gt_np])[0]
            real_feats.append(backends.real_features[key])
            fake_feats.append(backends.inception([pred_np])[0])
        if (k + 1) % 25 == 0 or k + 1 == len(samples):
            logger.info("%s: %d/%d images", method, k + 1, len(samples))
    real = np.array(real_feats) if real_feats else None
    fake = np.array(fake_feats) if fake_feats else None
    summary = {"all": _aggregate(rows, real, fake, config, range(len(rows)), min_distribution=2)}
    summary["bins"] = []
    for i in range(len(edges) - 1):
        idx = [j for j, r in enumerate(rows) if r["bin"] == i]
        entry = {"label": bin_label(edges, i), "range": [float(edges[i]), float(edges[i + 1])]}
        entry.update(_aggregate(rows, real, fake, config, idx, min_distribution=config.min_bin_images))
        summary["bins"].append(entry)
    report = {
        "title": title or method,
        "method": method,
        "method_details": method_details,
        "masks": masks.description,
        "num_images": len(rows),
        "subset": subset,
        "config": asdict(config),
        "backends": _backend_lines(config, backends),
        "warnings": _warnings(len(rows), config, subset),
        "seconds": {"total": round(time.perf_counter() - started, 2), "method": round(method_seconds, 2)},
        "summary": summary,
        "per_image": rows,
    }
    if extra:
        report.update(extra)
    write_report(report, out_dir)
    return report


def _paired_row(name: str, gt: np.ndarray, pred: np.ndarray, hole: np.ndarray, config: EvalConfig,
                backends: Backends, edges: np.ndarray) -> dict:
    area = float(hole.mean())
    row: dict[str, Any] = {"name": name, "mask_area": round(area, 6), "bin": bin_index(area, edges)}
    if "psnr" in config.metrics:
        row["psnr"], row["psnr_hole"] = M.psnr(gt, pred), M.psnr(gt, pred, hole)
    if "ssim" in config.metrics:
        row["ssim"], row["ssim_hole"] = M.ssim_full_and_hole(gt, pred, hole)
    if "l1" in config.metrics:
        row["l1"], row["l1_hole"] = M.l1(gt, pred), M.l1(gt, pred, hole)
    if backends.lpips is not None:
        import torch

        def to_t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(config.device)

        with torch.inference_mode():
            row["lpips"] = float(backends.lpips(to_t(gt), to_t(pred))[0])
    return row


def _mean(values: list[float]) -> float | None:
    vals = [min(v, PSNR_CAP) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def _aggregate(rows: list[dict], real: np.ndarray | None, fake: np.ndarray | None, config: EvalConfig,
               idx: Sequence[int], min_distribution: int) -> dict:
    idx = list(idx)
    out: dict[str, Any] = {"n": len(idx)}
    if not idx:
        return out
    out["mask_area"] = _mean([rows[j]["mask_area"] for j in idx])
    for key in ("psnr", "psnr_hole", "ssim", "ssim_hole", "l1", "l1_hole", "lpips"):
        if key in rows[idx[0]]:
            out[key] = _mean([rows[j][key] for j in idx])
    if real is not None and len(idx) >= max(2, min_distribution):
        r, f = real[idx], fake[idx]
        if "fid" in config.metrics:
            out["fid"] = M.fid(r, f)
        if "kid" in config.metrics:
            out["kid"], out["kid_std"] = M.kid(r, f, config.kid_subsets, config.kid_subset_size)
        if "ids" in config.metrics:
            out["u_ids"], out["p_ids"] = M.inception_discriminative_scores(r, f)
    return out


def _backend_lines(config: EvalConfig, backends: Backends) -> dict[str, str]:
    lines = {
        "psnr": "moebius.eval.metrics.psnr (data range 255; hole variant over hole pixels; averages cap at 100 dB)",
        "ssim": "moebius.eval.metrics.ssim (Gaussian 11x11 sigma 1.5, valid windows, channel mean; hole variant "
                "averages windows centred in the hole)",
        "l1": "moebius.eval.metrics.l1 (mean |a - b| / 255)",
    }
    if backends.inception is not None:
        lines["fid"] = f"moebius.eval.metrics.fid on {backends.inception.backend}"
        lines["kid"] = (f"moebius.eval.metrics.kid (cubic polynomial kernel, {config.kid_subsets} subsets of "
                        f"<= {config.kid_subset_size}) on the same features")
        lines["ids"] = "moebius.eval.metrics.inception_discriminative_scores (our primal L2-SVM, C=1) on the same features"
    if backends.lpips is not None:
        lines["lpips"] = backends.lpips.backend
    return {k: v for k, v in lines.items() if k in config.metrics}


def _warnings(n: int, config: EvalConfig, subset: bool) -> list[str]:
    out = []
    if subset:
        out.append(f"subset: {n} images where the benchmark declares {config.min_images}; FID/KID/IDS are not "
                   "comparable with published numbers")
    if "fid" in config.metrics and n < 2048:
        out.append(f"FID on {n} < 2048 images: the covariance is rank-deficient and FID is biased upward; "
                   "compare methods on the same images only, and prefer KID")
    if "ids" in config.metrics and n < 2048:
        out.append(f"U-IDS/P-IDS on {n} < 2048 images: the SVM can separate almost any two small sets "
                   "(U-IDS near 0 says little)")
    if any(m in config.metrics for m in DISTRIBUTION):
        out.append(f"FID/KID/IDS per mask-area bin only for bins of >= {config.min_bin_images} images")
    if "lpips" in config.metrics and config.lpips_variant == "shift-tolerant":
        out.append("LPIPS is the shift-tolerant variant (ST-LPIPS); it is not comparable with the papers' LPIPS")
    return out
