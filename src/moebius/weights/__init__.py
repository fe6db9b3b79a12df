"""Checkpoint formats (official layouts, our own folders) and the weights bundled with the package."""

from .bundled import default_model_dir

__all__ = ["default_model_dir"]
