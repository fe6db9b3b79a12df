"""MoebiusUNet: the 0.22B student, a 3-level U-Net of depthwise-separable resnets and LλMI blocks.

Attribute names follow the official
checkpoint keys (``down_blocks.i.resnets.j``, ``attentions.j``, ...), so weights load without a key map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.depthwise import DepthwiseSeparableConv
from ..layers.dw_resblock import DWResnetBlock
from ..layers.embeddings import TimestepEmbedding, broadcast_timesteps, timestep_sinusoid
from ..layers.llmi import LLMITransformer
from ..layers.resample import Downsample, Upsample
from ._registry import register_preset
from .denoiser import LatentCategoryDenoiser


@dataclass(frozen=True)
class MoebiusConfig:
    """Architecture of the Moebius student.

    ``sample_size`` is the latent side the Interactive-λ position tables were trained on (64 = 512 px);
    level l's table covers (sample_size / 2**l)² pixels.
    """

    family: ClassVar[str] = "moebius"

    in_channels: int = 9
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280)
    layers_per_block: int = 2
    heads: int = 8
    norm_num_groups: int = 32
    cross_attention_dim: int = 768
    encoder_hid_dim: int = 3072
    category_tokens: int = 10
    sample_size: int = 64
    local_kernel_size: int = 15
    ffn_ratio: float = 2.5

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def latent_multiple(self) -> int:
        """Latent sides must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.block_out_channels) - 1)


class MoebiusDownBlock(nn.Module):
    """``layers`` × (DW resnet -> LλMI), then an optional stride-2 conv. Returns output and skips."""

    def __init__(self, in_channels: int, out_channels: int, config: MoebiusConfig, grid_size: int, downsample: bool) -> None:
        super().__init__()
        # Declared before the resnets: the official state_dict lists attentions first.
        self.attentions = nn.ModuleList(
            [LLMITransformer(out_channels, config.cross_attention_dim, grid_size, config.heads, config.category_tokens,
                             config.norm_num_groups, config.local_kernel_size, config.ffn_ratio)
             for _ in range(config.layers_per_block)]
        )
        self.resnets = nn.ModuleList(
            [DWResnetBlock(in_channels if j == 0 else out_channels, out_channels, config.time_embed_dim,
                           config.norm_num_groups)
             for j in range(config.layers_per_block)]
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for resnet, attention in zip(self.resnets, self.attentions):
            x = attention(resnet(x, emb), context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MoebiusUpBlock(nn.Module):
    """``layers + 1`` × (concat skip -> DW resnet -> LλMI), then an optional nearest×2 + conv."""

    def __init__(self, prev_channels: int, out_channels: int, skip_channels: list[int], config: MoebiusConfig,
                 grid_size: int, upsample: bool) -> None:
        super().__init__()
        # Declared before the resnets: the official state_dict lists attentions first.
        self.attentions = nn.ModuleList(
            [LLMITransformer(out_channels, config.cross_attention_dim, grid_size, config.heads, config.category_tokens,
                             config.norm_num_groups, config.local_kernel_size, config.ffn_ratio)
             for _ in skip_channels]
        )
        self.resnets = nn.ModuleList(
            [DWResnetBlock((prev_channels if j == 0 else out_channels) + skip, out_channels, config.time_embed_dim,
                           config.norm_num_groups)
             for j, skip in enumerate(skip_channels)]
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, context: torch.Tensor,
                out_size: tuple[int, int] | None) -> torch.Tensor:
        for resnet, attention in zip(self.resnets, self.attentions):
            x = attention(resnet(torch.cat([x, skips.pop()], dim=1), emb), context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, out_size)
        return x


class MoebiusUNet(nn.Module):
    """The student denoiser: (x (B, 9, H, W), t, context (B, 10, 3072)) -> (ε (B, 4, H, W), block outputs).

    H and W must be multiples of ``config.latent_multiple`` (4: 32 px). Block outputs are the three
    down-block and three up-block outputs; index 2 (1280 channels at H/4) is the feature-KD tap.
    """

    def __init__(self, config: MoebiusConfig) -> None:
        super().__init__()
        self.config = c = config
        channels = c.block_out_channels
        levels = len(channels)
        self.conv_in = DepthwiseSeparableConv(c.in_channels, channels[0])
        self.time_embedding = TimestepEmbedding(channels[0], c.time_embed_dim)
        self.encoder_hid_proj = nn.Linear(c.encoder_hid_dim, c.cross_attention_dim)

        self.down_blocks = nn.ModuleList()
        skip_channels = [channels[0]]
        for level, out_ch in enumerate(channels):
            in_ch = channels[max(level - 1, 0)]
            last = level == levels - 1
            self.down_blocks.append(MoebiusDownBlock(in_ch, out_ch, c, c.sample_size >> level, downsample=not last))
            skip_channels += [out_ch] * (c.layers_per_block + (0 if last else 1))

        self.up_blocks = nn.ModuleList()
        prev = channels[-1]
        for i, out_ch in enumerate(reversed(channels)):
            level = levels - 1 - i
            skips = [skip_channels.pop() for _ in range(c.layers_per_block + 1)]
            self.up_blocks.append(MoebiusUpBlock(prev, out_ch, skips, c, c.sample_size >> level, upsample=level > 0))
            prev = out_ch

        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, channels[0], eps=1e-5)
        self.conv_out = DepthwiseSeparableConv(channels[0], c.out_channels)
        self.apply(_official_linear_init)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int | float,
                context: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.check_latent_size(x)
        emb = self.time_embed(timesteps, x)  # (B, 4C0)
        context = self.encoder_hid_proj(context)  # (B, 10, 768)

        x = self.conv_in(x)
        skips = [x]
        block_outputs = []
        for block in self.down_blocks:
            x, block_skips = block(x, emb, context)
            skips += block_skips
            block_outputs.append(x)
        return self.up_path(x, skips, emb, context, block_outputs), block_outputs

    def check_latent_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[2:]
        m = self.config.latent_multiple
        if h % m or w % m:
            raise ValueError(f"latent size {h}×{w} is not a multiple of {m} ({8 * m} px)")

    def time_embed(self, timesteps: torch.Tensor | int | float, x: torch.Tensor) -> torch.Tensor:
        """Timesteps (scalar or (B,)) -> (B, 4·C0) in x's dtype, B = x's batch."""
        t = broadcast_timesteps(timesteps, x.shape[0], x.device)
        return self.time_embedding(timestep_sinusoid(t, self.config.block_out_channels[0]).to(x.dtype))

    def up_path(self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, context: torch.Tensor,
                block_outputs: list[torch.Tensor]) -> torch.Tensor:
        """The up blocks (popping ``skips``, appending to ``block_outputs``), then the output conv -> ε."""
        for block in self.up_blocks:
            # The upsampler restores the size of the skip it will meet next.
            out_size = tuple(skips[-(len(block.resnets) + 1)].shape[2:]) if block.upsamplers is not None else None
            x = block(x, skips, emb, context, out_size)
            block_outputs.append(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def _official_linear_init(module: nn.Module) -> None:
    """The released code re-initialises every Linear of the U-Net xavier-uniform with zero bias;
    convolutions keep PyTorch's defaults. Only training from scratch sees this."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_moebius(config: MoebiusConfig) -> LatentCategoryDenoiser:
    """The student wrapped with its 20×``encoder_hid_dim`` category table (the official checkpoint's layout)."""
    return LatentCategoryDenoiser(MoebiusUNet(config), embedding_dim=config.encoder_hid_dim)


@register_preset("moebius", build_moebius)
def _moebius() -> MoebiusConfig:
    """The released 0.22B student (226,041,531 parameters), trained at 512² (64² latents)."""
    return MoebiusConfig()


@register_preset("moebius-tiny", build_moebius)
def _moebius_tiny() -> MoebiusConfig:
    """A 1.2M-parameter student with the full topology, for tests."""
    return MoebiusConfig(block_out_channels=(32, 64, 64), heads=4, norm_num_groups=8, cross_attention_dim=32,
                         encoder_hid_dim=48, sample_size=16, local_kernel_size=5)
