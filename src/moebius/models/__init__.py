"""Model definitions: the Moebius student, the PixelHacker teacher, the VAE, and their presets."""

from ._registry import Family, config_from_dict, config_to_dict, create_model, get_config, get_family, list_models
from .denoiser import DenoiserOutput, LatentCategoryDenoiser

__all__ = ["DenoiserOutput", "Family", "LatentCategoryDenoiser", "config_from_dict", "config_to_dict", "create_model",
           "get_config", "get_family", "list_models"]
