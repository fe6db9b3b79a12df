"""moebius: Moebius (and PixelHacker) image inpainting in pure PyTorch.

The top level re-exports the public API lazily, so ``import moebius`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, ConfigError, InputError, MoebiusError

__version__ = "0.1.0.dev0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InpaintOutput",
    "InputError",
    "MoebiusError",
    "MoebiusInpaintPipeline",
    "__version__",
    "create_model",
    "list_models",
    "load_official",
]

_LAZY = {
    "InpaintOutput": ("moebius.pipeline.output", "InpaintOutput"),
    "MoebiusInpaintPipeline": ("moebius.pipeline.pipeline", "MoebiusInpaintPipeline"),
    "create_model": ("moebius.models._registry", "create_model"),
    "list_models": ("moebius.models._registry", "list_models"),
    "load_official": ("moebius.weights.official", "load_official"),
}

if TYPE_CHECKING:
    from .models._registry import create_model, list_models
    from .pipeline.output import InpaintOutput
    from .pipeline.pipeline import MoebiusInpaintPipeline
    from .weights.official import load_official


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'moebius' has no attribute {name!r}")
