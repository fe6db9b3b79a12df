"""Classical pre-fills: the hole filled by OpenCV before the latent model refines it.

A small model that cannot yet lay down a hole's colours from pure noise can still refine them: the hole is
filled by Telea or Navier-Stokes, that image is encoded, noised to a low timestep (``strength`` < 1) and
denoised, as SDEdit does. Only pixels outside the hole are read, so whatever the input holds under the mask
never reaches the model.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from ..errors import InputError

Prefill = Literal["none", "telea", "navier-stokes"]
PREFILLS: tuple[str, ...] = get_args(Prefill)
RADIUS = 3  # OpenCV's neighbourhood radius in pixels, as the photo benchmark's baselines use


def classical_fill(rgb: np.ndarray, hole: np.ndarray, method: str) -> np.ndarray:
    """rgb (H, W, 3) uint8 and hole (H, W) bool -> a copy of rgb with the hole filled by ``method``
    (``"telea"`` or ``"navier-stokes"``); pixels outside the hole are unchanged."""
    if method not in PREFILLS[1:]:
        raise InputError(f"unknown fill {method!r}; choose from {', '.join(PREFILLS[1:])}")
    try:
        import cv2
    except ImportError:
        raise InputError(f"the {method} fill needs OpenCV: pip install opencv-python-headless") from None
    out = rgb.copy()
    if not hole.any():
        return out
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    filled = cv2.inpaint(np.ascontiguousarray(rgb), hole.astype(np.uint8) * 255, RADIUS, flag)
    out[hole] = filled[hole]
    return out
