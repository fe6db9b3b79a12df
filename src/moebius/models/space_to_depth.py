"""A lossless "autoencoder": pixels folded into channels (space-to-depth), normalised per colour.

An alternative to the KL-VAE for small models trained from scratch: no autoencoder to train, no
reconstruction loss, and the denoiser sees every pixel. ``encode`` turns images (B, 3, H, W) in [-1, 1]
into latents (B, 3·f², H/f, W/f); ``decode`` inverts it exactly (up to float rounding). Each colour is
shifted and scaled by statistics fitted on training images, so latents have roughly unit variance, as
the diffusion schedule assumes; the statistics are the module's only parameters (frozen) and travel in
its checkpoint.

It answers the same calls as :class:`~moebius.models.vae.AutoencoderKL` (``config.downsample_factor``,
``config.latent_channels``, ``config.scaling_factor``, ``encode(x).sample()/.mode()``, ``decode``), so
the pipeline and the trainer take either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError

CLASS_NAME = "SpaceToDepth"


@dataclass(frozen=True)
class SpaceToDepthConfig:
    """``factor`` pixels per latent cell along each side; latents have ``in_channels·factor²`` channels."""

    factor: int = 4
    in_channels: int = 3
    # Read by the pipeline and trainer like a VAE's; the per-colour statistics already normalise.
    scaling_factor: float = 1.0
    shift_factor: float | None = None

    def __post_init__(self) -> None:
        if self.factor < 1 or self.in_channels < 1:
            raise ConfigError(f"SpaceToDepth factor and in_channels must be positive, got {self}")

    @property
    def out_channels(self) -> int:
        return self.in_channels

    @property
    def latent_channels(self) -> int:
        return self.in_channels * self.factor**2

    @property
    def downsample_factor(self) -> int:
        return self.factor

    def to_config_dict(self) -> dict[str, Any]:
        return {"_class_name": CLASS_NAME, "factor": self.factor, "in_channels": self.in_channels}

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> SpaceToDepthConfig:
        unknown = sorted(set(config) - {"_class_name", "factor", "in_channels"})
        if config.get("_class_name") != CLASS_NAME or unknown:
            raise ConfigError(f"not a {CLASS_NAME} config (unexpected keys: {', '.join(unknown) or 'none'})")
        return cls(factor=int(config.get("factor", 4)), in_channels=int(config.get("in_channels", 3)))


class ExactPosterior:
    """The posterior of a deterministic encoder: std 0, so sampling returns the encoding itself."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.mean = latents
        self.std = torch.zeros_like(latents)

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is not None and noise.shape != self.mean.shape:
            raise InputError(f"noise shape {tuple(noise.shape)} != posterior shape {tuple(self.mean.shape)}")
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean


class SpaceToDepth(nn.Module):
    """Pixel-unshuffle by ``factor`` with per-colour normalisation (``colour_mean``, ``colour_std``)."""

    def __init__(self, config: SpaceToDepthConfig = SpaceToDepthConfig()) -> None:
        super().__init__()
        self.config = config
        self.colour_mean = nn.Parameter(torch.zeros(config.in_channels), requires_grad=False)
        self.colour_std = nn.Parameter(torch.ones(config.in_channels), requires_grad=False)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return (self.colour_mean.to(like.dtype).reshape(shape), self.colour_std.to(like.dtype).reshape(shape))

    def encode(self, x: torch.Tensor) -> ExactPosterior:
        """Images (B, C, H, W) in [-1, 1], H and W multiples of ``factor`` -> (B, C·f², H/f, W/f)."""
        f = self.config.factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise InputError(f"expected images (B, {self.config.in_channels}, H, W) with H and W multiples of {f}, "
                             f"got {tuple(x.shape)}")
        mean, std = self._stats(x)
        return ExactPosterior(F.pixel_unshuffle((x - mean) / std, f))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C·f², h, w) -> images (B, C, h·f, w·f)."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise InputError(f"expected latents (B, {self.config.latent_channels}, h, w), got {tuple(z.shape)}")
        mean, std = self._stats(z)
        return F.pixel_shuffle(z, self.config.factor) * std + mean

    def encode_latents(self, x: torch.Tensor, generator: torch.Generator | None = None,
                       sample: bool = True) -> torch.Tensor:
        """Images -> the latents the denoiser sees (the same with or without ``sample``)."""
        return self.encode(x).mean * self.config.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Denoiser latents -> images in roughly [-1, 1]."""
        return self.decode(z / self.config.scaling_factor)

    @torch.no_grad()
    def fit(self, images: Iterable[torch.Tensor]) -> SpaceToDepth:
        """Set the colour statistics from batches of images (B, C, H, W) in [-1, 1]; returns self."""
        total = torch.zeros(3, self.config.in_channels, dtype=torch.float64)  # count, sum, sum of squares
        for batch in images:
            x = batch.double().transpose(0, 1).reshape(self.config.in_channels, -1)
            total += torch.stack([torch.full_like(x[:, 0], x.shape[1]), x.sum(1), (x * x).sum(1)])
        if total[0, 0] == 0:
            raise InputError("SpaceToDepth.fit got no images")
        mean = total[1] / total[0]
        std = (total[2] / total[0] - mean**2).clamp_min(1e-8).sqrt()
        self.colour_mean.copy_(mean.float())
        self.colour_std.copy_(std.float())
        return self
