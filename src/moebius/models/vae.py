"""AutoencoderKL: the f8 KL autoencoder that maps images to the latents Moebius denoises.

The module tree reproduces diffusers'
``AutoencoderKL`` state-dict layout key for key and in the same order (tests/data/parity/vae_keys.json,
248 entries), so a diffusers ``vae/diffusion_pytorch_model.*`` loads strictly without a key map. Older
checkpoints that name the mid-block attention ``query/key/value/proj_attn`` are renamed on load.

Conventions: images are (B, 3, H, W) in [-1, 1] with H and W multiples of 2**(levels - 1) (8 for the
official config); latents are (B, latent_channels, H / 8, W / 8). ``encode``/``decode`` work on unscaled
latents; ``encode_latents``/``decode_latents`` apply the scaling factor (0.13025, SDXL's) and optional
shift the way the official pipeline does. Tensors keep the dtype and device they come in with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from ..layers.resample import Upsample

# Every GroupNorm in this autoencoder (resnets, mid attention, output norms) uses eps 1e-6.
_NORM_EPS = 1e-6


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of an AutoencoderKL. Defaults are PixelHacker's ``vae/config.json`` (SDXL VAE)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = 0.13025
    shift_factor: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        for name in ("in_channels", "out_channels", "latent_channels", "layers_per_block", "norm_num_groups"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"VAEConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.block_out_channels:
            raise ConfigError("VAEConfig.block_out_channels must name at least one level")
        bad = [c for c in self.block_out_channels if c < 1 or c % self.norm_num_groups]
        if bad:
            raise ConfigError(
                f"every block_out_channels entry must be a positive multiple of norm_num_groups="
                f"{self.norm_num_groups}; got {self.block_out_channels}"
            )
        if not self.scaling_factor > 0:
            raise ConfigError(f"VAEConfig.scaling_factor must be positive, got {self.scaling_factor!r}")

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each side (8 for four levels)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> VAEConfig:
        """Read a diffusers-style ``config.json`` dict.

        Keys starting with ``_`` and the pipeline hints ``sample_size`` / ``force_upcast`` are ignored.
        Keys describing an architecture this module does not build (other block types or activation,
        latent mean/std normalisation) raise :class:`ConfigError`, as does any key we do not know.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key.startswith("_"):
                if key == "_class_name" and value != "AutoencoderKL":
                    raise ConfigError(f"expected an AutoencoderKL config, got _class_name={value!r}")
                continue
            if key in _IGNORED_DIFFUSERS_KEYS:
                continue
            if key in _REQUIRED_DIFFUSERS_VALUES:
                _check_supported(key, value, config)
                continue
            if key not in fields:
                raise ConfigError(f"unknown VAE config key {key!r}")
            kwargs[key] = value
        if "block_out_channels" in kwargs:
            kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
        return cls(**kwargs)


# Hints for pipelines (tiling size, fp16 upcasting) that do not change the network.
_IGNORED_DIFFUSERS_KEYS = frozenset({"sample_size", "force_upcast"})
# Keys whose only supported value is the one the SD/SDXL VAE uses.
_REQUIRED_DIFFUSERS_VALUES = frozenset(
    {"act_fn", "down_block_types", "up_block_types", "latents_mean", "latents_std"}
)


def _check_supported(key: str, value: Any, config: Mapping[str, Any]) -> None:
    levels = len(config.get("block_out_channels", VAEConfig.block_out_channels))
    expected: Any
    if key == "act_fn":
        expected = "silu"
    elif key == "down_block_types":
        expected = ["DownEncoderBlock2D"] * levels
    elif key == "up_block_types":
        expected = ["UpDecoderBlock2D"] * levels
    else:  # latents_mean / latents_std: a per-channel latent normalisation we do not implement
        expected = None
    if (list(value) if isinstance(value, (list, tuple)) else value) != expected:
        raise ConfigError(f"unsupported VAE config {key}={value!r}; this AutoencoderKL supports only {expected!r}")


OFFICIAL_VAE_CONFIG = VAEConfig()
"""PixelHacker/Moebius ``vae/config.json``: 83,653,863 parameters."""

TINY_VAE_CONFIG = VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
"""A two-level (f2) autoencoder of 43,711 parameters, for fast tests."""


# ----------------------------------------------------------------------------------------------------
# Building blocks


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus a (1x1-projected when widths differ) shortcut.

    x: (B, C_in, H, W) -> (B, C_out, H, W). No time embedding; dropout is 0 in the VAE, so omitted.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=_NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=_NORM_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # Registered last: diffusers lists conv_shortcut after conv2 in the state dict.
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


# Pre-2023 diffusers names of the mid-block attention projections -> current names.
_LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_legacy_attention_keys(state_dict: dict[str, Any], prefix: str = "") -> None:
    """Rename ``{prefix}query|key|value|proj_attn.*`` to ``{prefix}to_q|to_k|to_v|to_out.0.*`` in place.

    Old diffusers VAE checkpoints used the first spelling; the tensors themselves are unchanged
    (Linear [C, C] weights and [C] biases), so renaming is the whole conversion.
    """
    for old, new in _LEGACY_ATTENTION_NAMES.items():
        for param in ("weight", "bias"):
            old_key = f"{prefix}{old}.{param}"
            if old_key in state_dict:
                new_key = f"{prefix}{new}.{param}"
                if new_key in state_dict:
                    raise ValueError(f"state dict holds both {old_key!r} and {new_key!r}")
                state_dict[new_key] = state_dict.pop(old_key)


class MidBlockAttention(nn.Module):
    """Single-head self-attention over all H*W positions, with a GroupNorm in front and a residual.

    x: (B, C, H, W) -> (B, C, H, W). diffusers sets the head width to C, hence one head.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=_NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # key "to_out.0" as in diffusers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q = self.to_q(tokens).unsqueeze(1)  # (B, 1, HW, C): one head
        k = self.to_k(tokens).unsqueeze(1)
        v = self.to_v(tokens).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, HW, C), scale C**-0.5
        out = self.to_out[0](out)
        return x + out.transpose(1, 2).reshape(b, c, h, w)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Runs for nested loads too (the VAE inside a pipeline module), unlike a load_state_dict override.
        rename_legacy_attention_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MidBlock(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution. x: (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int, groups: int, add_attention: bool) -> None:
        super().__init__()
        # attentions before resnets: that is diffusers' state-dict order.
        self.attentions = nn.ModuleList([MidBlockAttention(channels, groups)] if add_attention else [])
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class AsymmetricDownsample(nn.Module):
    """Pad one zero row/column at the bottom/right, then a 3x3 stride-2 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The asymmetric pad is what the SD/SDXL VAE was trained with; symmetric padding shifts the grid.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class EncoderLevel(nn.Module):
    """One encoder resolution level (diffusers' DownEncoderBlock2D): resnets, then an optional Downsample."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, downsample: bool) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * layers
        self.resnets = nn.ModuleList([ResnetBlock(widths[j], out_channels, groups) for j in range(layers)])
        self.downsamplers = nn.ModuleList([AsymmetricDownsample(out_channels)] if downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in (*self.resnets, *self.downsamplers):
            x = module(x)
        return x


class DecoderLevel(nn.Module):
    """One decoder resolution level (diffusers' UpDecoderBlock2D): resnets, then an optional Upsample."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, upsample: bool) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * layers
        self.resnets = nn.ModuleList([ResnetBlock(widths[j], out_channels, groups) for j in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample(out_channels)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in (*self.resnets, *self.upsamplers):
            x = module(x)
        return x


class Encoder(nn.Module):
    """Image (B, C_in, H, W) -> posterior moments (B, 2*latent, H/f, W/f): [mean | log-variance]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths, groups = config.block_out_channels, config.norm_num_groups
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            EncoderLevel(widths[max(i - 1, 0)], widths[i], config.layers_per_block, groups, downsample=i < last)
            for i in range(len(widths))
        )
        self.mid_block = MidBlock(widths[-1], groups, config.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=_NORM_EPS)
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, latent, h, w) -> image (B, C_out, h*f, w*f). Each level has layers_per_block + 1 resnets."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths, groups = tuple(reversed(config.block_out_channels)), config.norm_num_groups
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        # up_blocks before mid_block: diffusers' state-dict order, although mid_block runs first.
        self.up_blocks = nn.ModuleList(
            DecoderLevel(widths[max(i - 1, 0)], widths[i], config.layers_per_block + 1, groups, upsample=i < last)
            for i in range(len(widths))
        )
        self.mid_block = MidBlock(widths[0], groups, config.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=_NORM_EPS)
        self.conv_out = nn.Conv2d(widths[-1], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


# ----------------------------------------------------------------------------------------------------
# Posterior and the autoencoder


class DiagonalGaussian:
    """The encoder's posterior N(mean, std²) per latent element; mean and std are (B, latent, h, w)."""

    def __init__(self, moments: torch.Tensor) -> None:
        mean, logvar = moments.chunk(2, dim=1)
        # Same clamp as diffusers, so std matches theirs where the encoder saturates.
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.mean = mean
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """mean + std * noise, with noise drawn from ``generator`` unless given (e.g. a recorded draw).

        Noise is drawn on the generator's device and then moved, so a CPU generator gives the same
        latents whatever device the VAE runs on.
        """
        if noise is None:
            device = generator.device if generator is not None else self.mean.device
            noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        elif noise.shape != self.mean.shape:
            raise InputError(f"noise shape {tuple(noise.shape)} != posterior shape {tuple(self.mean.shape)}")
        return self.mean + self.std * noise.to(device=self.mean.device, dtype=self.mean.dtype)

    def mode(self) -> torch.Tensor:
        """The posterior mean (deterministic encoding)."""
        return self.mean


class AutoencoderKL(nn.Module):
    """KL-regularised f8 autoencoder with diffusers' ``AutoencoderKL`` checkpoint layout."""

    def __init__(self, config: VAEConfig = OFFICIAL_VAE_CONFIG) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        moments = 2 * config.latent_channels
        self.quant_conv = nn.Conv2d(moments, moments, 1) if config.use_quant_conv else None
        self.post_quant_conv = (
            nn.Conv2d(config.latent_channels, config.latent_channels, 1) if config.use_post_quant_conv else None
        )

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> AutoencoderKL:
        """Build (randomly initialised) from a diffusers-style ``config.json`` dict."""
        return cls(VAEConfig.from_config_dict(config))

    def _check_image(self, x: torch.Tensor) -> None:
        f = self.config.downsample_factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % f or x.shape[3] % f:
            raise InputError(
                f"expected images (B, {self.config.in_channels}, H, W) with H and W multiples of {f}, "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images (B, C_in, H, W) in [-1, 1] -> posterior over unscaled latents (B, latent, H/f, W/f)."""
        self._check_image(x)
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian(moments)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, latent, h, w) -> images (B, C_out, h*f, w*f), roughly in [-1, 1], unclamped."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise InputError(f"expected latents (B, {self.config.latent_channels}, h, w), got {tuple(z.shape)}")
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode_latents(
        self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """Images in [-1, 1] -> the latents the denoiser sees: (z - shift) * scaling_factor.

        ``sample=True`` draws z from the posterior, as the official pipeline does;
        ``sample=False`` uses the posterior mean.
        """
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        if self.config.shift_factor is not None:
            z = z - self.config.shift_factor
        return z * self.config.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Denoiser latents -> images: decode(z / scaling_factor + shift), roughly in [-1, 1], unclamped."""
        z = z / self.config.scaling_factor
        if self.config.shift_factor is not None:
            z = z + self.config.shift_factor
        return self.decode(z)
