"""Inference: the inpainting pipeline and its presets.

The names below are imported on first use: the ONNX Runtime pipeline (``moebius.onnx``) shares this package's
torch-free modules (``composition``, ``presets``, ``image_io``, ``masks``, ``hd``, ``blend``), and importing
the package must not pull torch in for it.
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
    "StepInfo": "composition",
}

if TYPE_CHECKING:
    from .composition import StepInfo
    from .noise import NoiseDraws
    from .output import InpaintMetadata, InpaintOutput
    from .pipeline import MoebiusInpaintPipeline
    from .presets import InpaintPreset, get_preset, list_presets


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
