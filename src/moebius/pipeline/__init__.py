"""Inference: the inpainting pipeline, its presets and the DDIM scheduler.

``MoebiusInpaintPipeline`` and friends are imported on first use, so ``import moebius.pipeline.ddim`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["InpaintMetadata", "InpaintOutput", "InpaintPreset", "MoebiusInpaintPipeline", "NoiseDraws",
           "StepInfo", "get_preset", "list_presets"]

_LAZY = {
    "MoebiusInpaintPipeline": "pipeline",
    "InpaintOutput": "output",
    "InpaintMetadata": "output",
    "InpaintPreset": "presets",
    "get_preset": "presets",
    "list_presets": "presets",
    "NoiseDraws": "noise",
    "StepInfo": "sampler",
}

if TYPE_CHECKING:
    from .noise import NoiseDraws
    from .output import InpaintMetadata, InpaintOutput
    from .pipeline import MoebiusInpaintPipeline
    from .presets import InpaintPreset, get_preset, list_presets
    from .sampler import StepInfo


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
