"""A ready-to-run pipeline from what every front door offers (``moebius inpaint``/``batch``/``eval`` and the
server): the weights folder, variant, VAE folder, device, network dtype, whether to take the fast path and
whether to compile the U-Net."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError
from .pipeline import MoebiusInpaintPipeline

DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(name: str) -> str:
    """``auto`` -> cuda (this process's LOCAL_RANK GPU under torchrun/accelerate), else mps, else cpu."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_dtype(device: str, dtype: str) -> None:
    """Refuse float16 on the CPU (``moebius doctor`` lists it for CUDA and MPS only) with a one-line InputError."""
    if dtype == "float16" and device.split(":")[0] == "cpu":
        raise InputError("--dtype float16 is for CUDA and MPS; on the CPU use float32 or bfloat16")


def build_pipeline(weights: str | Path, *, variant: str | None = None, vae: str | Path | None = None,
                   device: str = "cpu", dtype: str = "float32", fast: bool = True,
                   local_files_only: bool = False, compile: bool = False) -> MoebiusInpaintPipeline:
    """Load ``weights`` (see :meth:`MoebiusInpaintPipeline.from_pretrained`) and move it to ``device``
    (``auto`` allowed) in ``dtype`` (one of :data:`DTYPES`); an unusable device is an InputError. ``compile``:
    :meth:`MoebiusInpaintPipeline.compile_unet`."""
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    device = resolve_device(device)
    check_dtype(device, dtype)
    pipe = MoebiusInpaintPipeline.from_pretrained(weights, variant=variant, vae=vae, fast=fast,
                                                  local_files_only=local_files_only)
    try:
        pipe.to(device, getattr(torch, dtype))
    except (RuntimeError, AssertionError, ValueError) as exc:  # unknown or unavailable device
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot use device {device!r}: {detail}") from None
    if compile:
        pipe.compile_unet()
    return pipe
