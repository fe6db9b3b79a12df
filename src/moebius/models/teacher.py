"""The PixelHacker teacher (0.86B): an SD-1.5-shaped U-Net whose self-attention is gated linear attention.

Structure, for ``block_out_channels`` (c0, c1, c2, c3):

- conv_in; time embedding (c0-dim sinusoid -> 4·c0); ``encoder_hid_proj`` on the category tokens.
- down 0..2: [resnet -> transformer] × layers_per_block, then a stride-2 conv; down 3: resnets only.
- mid: resnet -> transformer -> resnet.
- up 0: resnets only (+ upsample); up 1..3: [resnet -> transformer] × (layers_per_block + 1),
  upsampling after every level but the last. Each up resnet first concatenates one skip tensor.
- GroupNorm -> SiLU -> conv_out.

Module names and registration order reproduce the official state_dict (753 entries for the wrapper).
Any latent size works; the spatial size is halved three times, so multiples of 8 keep every level exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..layers.embeddings import TimestepEmbedding, broadcast_timesteps, timestep_sinusoid
from ..layers.gla import GatedLinearAttention
from ..layers.resample import Downsample, Upsample
from ..layers.unet_parts import ResnetBlock2D, Transformer2D, TransformerBlock
from ._registry import register_preset
from .denoiser import LatentCategoryDenoiser


@dataclass(frozen=True)
class PixelHackerConfig:
    """Hyperparameters of the teacher U-Net; the defaults are the released 0.86B model."""

    family: ClassVar[str] = "pixelhacker"

    in_channels: int = 9
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    heads: int = 8  # both the GLA self-attention and the cross-attention
    cross_attention_dim: int = 768
    encoder_hid_dim: int = 3072  # width of the raw category embeddings
    norm_num_groups: int = 32

    def __post_init__(self) -> None:
        if len(self.block_out_channels) < 2:
            raise ConfigError("block_out_channels needs at least two levels")
        for c in self.block_out_channels:
            if c % self.norm_num_groups or c % (2 * self.heads):
                raise ConfigError(
                    f"channel width {c} must be divisible by norm_num_groups={self.norm_num_groups} "
                    f"and by 2 * heads = {2 * self.heads}"
                )


def _transformer(channels: int, config: PixelHackerConfig) -> Transformer2D:
    block = TransformerBlock(
        channels, config.cross_attention_dim, config.heads, GatedLinearAttention(channels, config.heads)
    )
    return Transformer2D(channels, block, config.norm_num_groups)


class DownBlock(nn.Module):
    """One encoder level: x (B, C_in, H, W) -> (output, skips), output (B, C_out, H/2, W/2) when downsampling.

    ``skips`` holds every resnet(/transformer) output and the downsampled output, for the decoder.
    """

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, config: PixelHackerConfig,
        attention: bool, downsample: bool,
    ) -> None:
        super().__init__()
        n = config.layers_per_block
        # Registered before ``resnets``: the checkpoint lists attentions first.
        self.attentions = nn.ModuleList([_transformer(out_channels, config) for _ in range(n)]) if attention else None
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels, config.norm_num_groups)
            for i in range(n)
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet -> transformer -> resnet at the lowest resolution: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, temb_channels: int, config: PixelHackerConfig) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([_transformer(channels, config)])
        self.resnets = nn.ModuleList(
            ResnetBlock2D(channels, channels, temb_channels, config.norm_num_groups) for _ in range(2)
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UpBlock(nn.Module):
    """One decoder level: each resnet first concatenates the latest remaining skip on channels.

    x (B, C_prev, H, W) and ``skips`` (consumed from the end) -> (B, C_out, *upsample_size), or
    (B, C_out, H, W) for the last level (no upsampler).
    """

    def __init__(
        self, prev_channels: int, out_channels: int, skip_channels: list[int], temb_channels: int,
        config: PixelHackerConfig, attention: bool, upsample: bool,
    ) -> None:
        super().__init__()
        n = len(skip_channels)
        self.attentions = nn.ModuleList([_transformer(out_channels, config) for _ in range(n)]) if attention else None
        self.resnets = nn.ModuleList(
            ResnetBlock2D((prev_channels if i == 0 else out_channels) + skip, out_channels, temb_channels,
                          config.norm_num_groups)
            for i, skip in enumerate(skip_channels)
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, context: torch.Tensor,
        upsample_size: tuple[int, int] | None,
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class PixelHackerUNet(nn.Module):
    """The teacher's ε-prediction U-Net (the checkpoint's ``diff_model``).

    forward: x (B, in_channels, H, W); timesteps scalar, (1,) or (B,); context (B, M, encoder_hid_dim)
    raw category embeddings -> (sample (B, out_channels, H, W), the 9 block outputs
    [down0..down3, mid, up0..up3]). Block 5 (up0) is the feature-distillation target.
    """

    def __init__(self, config: PixelHackerConfig) -> None:
        super().__init__()
        self.config = config
        chans = config.block_out_channels
        levels = len(chans)
        temb_channels = 4 * chans[0]
        self.conv_in = nn.Conv2d(config.in_channels, chans[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(chans[0], temb_channels)
        self.encoder_hid_proj = nn.Linear(config.encoder_hid_dim, config.cross_attention_dim)

        self.down_blocks = nn.ModuleList()
        skip_channels = [chans[0]]  # channels of every skip tensor, in the order they are produced
        for i, out_ch in enumerate(chans):
            last = i == levels - 1
            in_ch = chans[max(i - 1, 0)]
            self.down_blocks.append(
                DownBlock(in_ch, out_ch, temb_channels, config, attention=not last, downsample=not last)
            )
            skip_channels += [out_ch] * (config.layers_per_block + (0 if last else 1))

        # Registered before ``mid_block``: the checkpoint lists up_blocks first.
        self.up_blocks = nn.ModuleList()
        prev_ch = chans[-1]
        for i, out_ch in enumerate(reversed(chans)):
            first, last = i == 0, i == levels - 1
            taken = [skip_channels.pop() for _ in range(config.layers_per_block + 1)]
            self.up_blocks.append(
                UpBlock(prev_ch, out_ch, taken, temb_channels, config, attention=not first, upsample=not last)
            )
            prev_ch = out_ch
        self.mid_block = MidBlock(chans[-1], temb_channels, config)
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, chans[0], eps=1e-5)
        self.conv_out = nn.Conv2d(chans[0], config.out_channels, 3, padding=1)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor | int | float, context: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t = broadcast_timesteps(timesteps, x.shape[0], x.device)
        temb = self.time_embedding(timestep_sinusoid(t, self.config.block_out_channels[0]).to(x.dtype))
        context = self.encoder_hid_proj(context)

        h = self.conv_in(x)
        skips = [h]
        blocks = []
        for down in self.down_blocks:
            h, produced = down(h, temb, context)
            skips += produced
            blocks.append(h)
        h = self.mid_block(h, temb, context)
        blocks.append(h)
        for up in self.up_blocks:
            remaining = len(skips) - len(up.resnets)
            # Upsample to the size of the skip the next level starts with.
            size = tuple(skips[remaining - 1].shape[-2:]) if remaining else None
            h = up(h, skips, temb, context, size)
            blocks.append(h)
        return self.conv_out(F.silu(self.conv_norm_out(h))), blocks


def build_pixelhacker(config: PixelHackerConfig) -> LatentCategoryDenoiser:
    """The checkpoint-compatible teacher: category table (20 × encoder_hid_dim) plus the U-Net."""
    return LatentCategoryDenoiser(PixelHackerUNet(config), embedding_dim=config.encoder_hid_dim)


@register_preset("pixelhacker", build_pixelhacker)
def pixelhacker_config() -> PixelHackerConfig:
    """The released PixelHacker teacher: 862,251,708 parameters."""
    return PixelHackerConfig()


@register_preset("pixelhacker-tiny", build_pixelhacker)
def pixelhacker_tiny_config() -> PixelHackerConfig:
    """A 3.2M-parameter teacher with the same wiring, for tests and smoke runs."""
    return PixelHackerConfig(
        block_out_channels=(32, 64, 64, 64), norm_num_groups=8, cross_attention_dim=32, encoder_hid_dim=64
    )
