"""Model definitions: the Moebius student, the PixelHacker teacher, the VAE, and their presets."""

from ._registry import create_model, get_config, list_models
from .denoiser import DenoiserOutput, LatentCategoryDenoiser

__all__ = ["DenoiserOutput", "LatentCategoryDenoiser", "create_model", "get_config", "list_models"]
