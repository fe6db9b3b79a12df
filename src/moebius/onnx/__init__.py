"""Moebius without PyTorch: ONNX export (``moebius export``) and an ONNX Runtime inpainting pipeline.

The runtime side (:mod:`.layout`, :mod:`.scheduler`, :mod:`.random`, :mod:`.pipeline`) imports only
onnxruntime, numpy, Pillow and torch-free moebius modules; :mod:`.export` and :mod:`.precision` need torch
and onnx and are imported only by the export command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["OnnxInpaintPipeline", "is_export_folder"]

if TYPE_CHECKING:
    from .layout import is_export_folder
    from .pipeline import OnnxInpaintPipeline


def __getattr__(name: str) -> Any:
    if name == "OnnxInpaintPipeline":
        from .pipeline import OnnxInpaintPipeline

        return OnnxInpaintPipeline
    if name == "is_export_folder":
        from .layout import is_export_folder

        return is_export_folder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
