"""Inference: the inpainting pipeline and its presets."""

from .noise import NoiseDraws
from .output import InpaintMetadata, InpaintOutput
from .pipeline import MoebiusInpaintPipeline
from .presets import InpaintPreset, get_preset, list_presets
from .sampler import StepInfo

__all__ = ["InpaintMetadata", "InpaintOutput", "InpaintPreset", "MoebiusInpaintPipeline", "NoiseDraws",
           "StepInfo", "get_preset", "list_presets"]
